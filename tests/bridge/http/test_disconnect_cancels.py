"""An SSE caller that disconnects cancels its request on the inference server.

Real pieces: an inference server with the ``simulated`` models (generation units made slow, so a
caption lasts seconds), the aiohttp app on a real port, and an aiohttp client that goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bridge.http.app import create_app
from bridge.http.settings import HttpSettings
from bridge.server import InferenceServer
from tests.bridge.http.conftest import data_uri, image_bytes, server_config


@pytest.fixture
def simulated_server() -> Iterator[InferenceServer]:
    server = InferenceServer(server_config(
        policy={"kind": "simulated", "preset": "nano-2b-h200"},
        vlm={"kind": "simulated", "preset": "moondream2-h200",
             "options": {"device": {"kernel_launch_us": 100.0}}},  # ~30 ms per unit: a long caption ~5 s
    ))
    server.start()
    assert server.wait_ready(60)
    yield server
    server.stop()


async def _wait_cancelled(server: InferenceServer, count: int, timeout_s: float = 5.0) -> bool:
    end_s = time.monotonic() + timeout_s
    while time.monotonic() < end_s:
        if server.loop.state.counters["generation_cancelled"] >= count and server.loop.state.generation_active == 0:
            return True
        await asyncio.sleep(0.01)
    return False


def test_sse_disconnect_cancels_on_the_inference_server(simulated_server: InferenceServer) -> None:
    settings = HttpSettings(server_endpoint=simulated_server.endpoint, request_timeout_s=60.0)
    body: dict[str, Any] = {"image_url": data_uri(image_bytes()), "length": "long"}

    async def main() -> None:
        server = TestServer(create_app(settings))
        await server.start_server()
        try:
            url = str(server.make_url("/v1/caption"))
            async with aiohttp.ClientSession() as session:
                for _ in range(200):  # the app's upstream probe must have seen the server
                    async with session.get(str(server.make_url("/health"))) as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.05)
                response = await session.post(url, json={**body, "stream": True})
                assert response.status == 200
                first = await response.content.readline()
                assert first.startswith(b"data: ") and b'"completed": false' in first
                response.close()  # the browser tab goes away mid-caption
                # the next chunk cannot be written: the stream is closed, the ZeroMQ client sends cancel
                assert await _wait_cancelled(simulated_server, 1), "the SSE caller's caption kept its slot"
        finally:
            await server.close()

    asyncio.run(main())

