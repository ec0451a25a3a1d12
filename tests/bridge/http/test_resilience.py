"""The companion without its inference server: fast 503s, and recovery when the server returns."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp
from aiohttp.test_utils import TestClient

from bridge.http.settings import HttpSettings
from tests.bridge.http.conftest import data_uri, free_port, image_bytes, run_app, server_config

PNG = data_uri(image_bytes())


def image_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", image_bytes(), filename="view.png", content_type="image/png")
    return form


async def wait_for(client: TestClient, path: str, status: int, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if (await client.get(path)).status == status:
            return time.perf_counter() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not answer {status} within {timeout_s} s")


async def assert_fast_503(client: TestClient) -> None:
    for method, path, kwargs in (
        ("POST", "/v1/caption", {"json": {"image_url": PNG}}),
        ("POST", "/v1/act", {"json": {"image_url": PNG}}),
        ("POST", "/predict", {"data": image_form()}),
        ("GET", "/stats", {}),
        ("GET", "/health", {}),
    ):
        started = time.perf_counter()
        resp = await client.request(method, path, **kwargs)
        elapsed_s = time.perf_counter() - started
        assert resp.status == 503, (path, await resp.text())
        assert elapsed_s < 2.0, (path, elapsed_s)  # not the 60 s request timeout; slack for host hiccups
        body = await resp.json()
        if path != "/health":
            assert body["error"]["code"] == "server_unreachable" and body["error"]["retryable"] is True
            assert resp.headers["Retry-After"] == "1"
        else:
            assert body["status"] == "unhealthy" and body["server"]["reachable"] is False


def test_server_down_then_up_then_down_again() -> None:
    from bridge.server import InferenceServer

    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    settings = HttpSettings(server_endpoint=endpoint, probe_interval_s=0.2, probe_timeout_s=0.5, request_timeout_s=30)

    async def body(client: TestClient) -> None:
        await assert_fast_503(client)
        status = await (await client.get("/api/status")).json()
        assert status["server"]["reachable"] is False and status["server"]["error"]
        metrics = await (await client.get("/metrics")).text()
        assert "vtla_server_up 0" in metrics

        # the server arrives (policy only, to load fast); the companion notices by itself
        server = InferenceServer(server_config(server={"bind": endpoint}, vlm={"enabled": False}))
        server.start()
        try:
            await wait_for(client, "/health", 200, timeout_s=120)
            resp = await client.post("/predict", data=image_form())
            assert resp.status == 200, await resp.text()
            # the VLM is disabled: /v1/caption is "not served", not a crash
            resp = await client.post("/v1/caption", json={"image_url": PNG, "settings": {"max_tokens": 2}})
            assert resp.status == 501, await resp.text()
            assert (await resp.json())["error"]["code"] == "not_served"
        finally:
            server.stop()
        # and goes away again: within a few probes the companion answers 503 fast again
        await wait_for(client, "/health", 503, timeout_s=10)
        await assert_fast_503(client)

    run_app(settings, body)


def test_server_tokens_wrong_and_right() -> None:
    from bridge.server import InferenceServer

    server = InferenceServer(server_config(server={"auth_tokens": ["s3cret"]}, vlm={"enabled": False}))
    server.start()
    assert server.wait_ready(120)
    try:
        async def refused(client: TestClient) -> None:
            # reachable but refusing the companion: a deployment problem (502), not "unreachable"
            resp = await client.post("/predict", data=image_form())
            assert resp.status == 502, await resp.text()
            assert (await resp.json())["error"]["code"] == "unauthorized"
            health = await client.get("/health")
            assert health.status == 503
            assert (await health.json())["server"]["reachable"] is True

        async def accepted(client: TestClient) -> None:
            resp = await client.post("/predict", data=image_form())
            assert resp.status == 200, await resp.text()

        base = HttpSettings(server_endpoint=server.endpoint, probe_timeout_s=1.0)
        run_app(base, refused)
        run_app(replace(base, server_token="s3cret"), accepted)
    finally:
        server.stop()
