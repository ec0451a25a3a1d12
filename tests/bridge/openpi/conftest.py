"""Fixtures for the openpi endpoint: real inference servers (tiny VTLA, scripted experts) and the
endpoint served on an ephemeral loopback port from a background thread, for openpi-client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from bridge.openpi.app import create_app
from bridge.openpi.settings import OpenpiSettings
from bridge.server import InferenceServer
from tests.conftest import server_config
from vtla_contracts.openpi_keys import presets


class LiveEndpoint:
    """The openpi app on 127.0.0.1:<ephemeral> in its own thread and event loop."""

    def __init__(self, settings: OpenpiSettings) -> None:
        self.settings = settings
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="live-openpi", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(create_app(self.settings))
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self) -> LiveEndpoint:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_inference(**sections: dict[str, Any]) -> InferenceServer:
    sections = {"batching": {"max_batch": 8}, **sections}  # fewer warm-up buckets than the default 64
    config = server_config(device={"device": "cpu"}, vlm={"enabled": False}, **sections)
    server = InferenceServer(config)
    server.start()
    assert server.wait_ready(120), server.loop.state.detail
    return server


def endpoint_for(server: InferenceServer, **settings: Any) -> LiveEndpoint:
    base = OpenpiSettings(server_endpoint=server.endpoint, mapping=presets()["libero"], request_timeout_s=30.0)
    return LiveEndpoint(replace(base, **settings)).start()


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[InferenceServer]:
    """The tiny VTLA (random weights): one camera 'primary', no proprio, chunk 4."""
    server = start_inference()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_endpoint(tiny_server: InferenceServer) -> Iterator[LiveEndpoint]:
    live = endpoint_for(tiny_server)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def expert_server() -> Iterator[InferenceServer]:
    """The scripted Lift expert of configs/robosuite-lift-expert.toml, with a 4-step chunk."""
    server = start_inference(policy={"kind": "expert-lift", "options": {"chunk_size": 4}})
    yield server
    server.stop()
