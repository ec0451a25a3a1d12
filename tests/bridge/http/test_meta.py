"""Metrics, OpenAPI (kept in sync with the router), docs, web UI files, error hygiene, no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.http.app import create_app
from bridge.http.metrics import HttpMetrics
from bridge.http.settings import HttpSettings, connect_endpoint
from bridge.supervise import resolve_bind
from tests.bridge.http.conftest import FAST, data_uri, image_bytes, run_app

_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (?:[0-9.e+-]+|\+Inf)$')


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ ", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_count_requests_errors_latency_and_batches(run: Any) -> None:
    async def body(client: TestClient) -> None:
        png = data_uri(image_bytes())
        for _ in range(2):
            assert (await client.post("/v1/act", json={"image_url": png})).status == 200
        assert (await client.post("/v1/point", json={"image_url": png, "object": "x", "settings": FAST})).status == 200
        assert (await client.post("/v1/caption", json={"image_url": "nope"})).status == 400
        text = await (await client.get("/metrics")).text()
        samples = parse_metrics(text)
        assert samples['vtla_http_requests_total{op="act",status="200"}'] == 2
        assert samples['vtla_http_requests_total{op="caption",status="400"}'] == 1
        assert samples['vtla_http_errors_total{op="caption",code="bad_request"}'] == 1
        assert samples['vtla_http_request_duration_seconds_count{op="act"}'] == 2
        assert samples['vtla_http_request_duration_seconds_bucket{op="act",le="+Inf"}'] == 2
        assert samples['vtla_server_batch_size_count{op="act"}'] == 2
        assert samples['vtla_server_batch_size_bucket{op="act",le="1"}'] >= 1
        assert samples['vtla_server_compute_seconds_count{op="point"}'] == 1
        assert samples["vtla_server_up"] == 1
        assert "vtla_server_queue_depth" in samples
        assert samples["vtla_http_in_flight"] == 1  # this very request
        status = await (await client.get("/api/status")).json()
        assert status["latency_ms"]["act"]["count"] == 2
        assert status["server"]["reachable"] is True and "act" in status["server"]["ops"]
        roles = {m["role"]: m for m in status["models"]}
        assert roles["policy"]["random_weights"] is True and roles["policy"]["action"]["dim"] == 7
        assert roles["vlm"]["loaded"] is True
        assert status["device"] == "cpu" and isinstance(status["queue_depth"], int)

    run(body)


def test_histogram_buckets_are_cumulative() -> None:
    metrics = HttpMetrics()
    for value_s in (0.0005, 0.003, 0.003, 100.0):
        metrics.duration.observe(value_s, "act")
    samples = parse_metrics(metrics.render())
    assert samples['vtla_http_request_duration_seconds_bucket{op="act",le="0.001"}'] == 1
    assert samples['vtla_http_request_duration_seconds_bucket{op="act",le="0.005"}'] == 3
    assert samples['vtla_http_request_duration_seconds_bucket{op="act",le="60"}'] == 3
    assert samples['vtla_http_request_duration_seconds_bucket{op="act",le="+Inf"}'] == 4
    assert abs(samples['vtla_http_request_duration_seconds_sum{op="act"}'] - 100.0065) < 1e-9


def test_openapi_matches_the_routes() -> None:
    app = create_app(HttpSettings(server_endpoint="tcp://127.0.0.1:1"))
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None and route.name != "static"
    }
    routed = {(m, p) for m, p in routed if not p.startswith("/static")}

    async def body(client: TestClient) -> None:
        spec = await (await client.get("/openapi.json")).json()
        documented = {(method, path) for path, item in spec["paths"].items() for method in item}
        assert documented == routed
        ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
        assert len(ids) == len(set(ids))
        assert spec["components"]["securitySchemes"]["MoondreamAuth"]["name"] == "X-Moondream-Auth"

    run_app(HttpSettings(server_endpoint="tcp://127.0.0.1:1", probe_timeout_s=0.2), body)


def test_ui_docs_and_static_files_are_served(run: Any) -> None:
    async def body(client: TestClient) -> None:
        for path, kind, needle in (("/", "text/html", 'id="caption-text"'), ("/docs", "text/html", "openapi.json"),
                                   ("/static/app.js", "javascript", "postStream"),
                                   ("/static/style.css", "text/css", "@media")):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert kind in resp.headers["Content-Type"], (path, resp.headers["Content-Type"])
            assert needle in await resp.text()
        assert (await client.get("/static/../settings.py")).status in (403, 404)

    run(body)


def test_unknown_routes_and_methods_are_json(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.get("/nope")
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        resp = await client.get("/v1/caption")
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
        assert "POST" in resp.headers["Allow"]

    run(body)


def test_unexpected_errors_do_not_leak(settings: HttpSettings) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def body(client: TestClient) -> None:
        resp = await client.get("/boom")
        assert resp.status == 500
        text = await resp.text()
        assert "secret" not in text and "Traceback" not in text
        assert (await resp.json())["error"]["code"] == "internal"

    run_app(settings, body, app_hook=lambda app: app.router.add_get("/boom", boom))


def test_the_http_side_never_imports_torch() -> None:
    code = ("import sys, bridge.http, bridge.http.serve_http, bridge.supervise; "
            "bridge.http.create_app(bridge.http.HttpSettings(server_endpoint='tcp://127.0.0.1:1')); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False False"


def test_endpoint_helpers() -> None:
    assert connect_endpoint("tcp://0.0.0.0:5555") == "tcp://127.0.0.1:5555"
    assert connect_endpoint("tcp://*:5555") == "tcp://127.0.0.1:5555"
    assert connect_endpoint("tcp://10.0.0.2:5555") == "tcp://10.0.0.2:5555"
    assert connect_endpoint("ipc:///tmp/vtla.sock") == "ipc:///tmp/vtla.sock"
    resolved = resolve_bind("tcp://127.0.0.1:*")
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", resolved) and not resolved.endswith(":0")
    assert resolve_bind("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
