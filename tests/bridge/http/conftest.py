"""Fixtures for the HTTP companion's tests: a real inference server (tiny random models, CPU),
the app under aiohttp's test client, and a live HTTP server for browser/client tests."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bridge.config import BridgeConfig, with_overrides
from bridge.http.app import create_app
from bridge.http.settings import HttpSettings
from tests.conftest import free_port

# generation kept short: the tiny model's text is gibberish anyway
FAST = {"max_tokens": 6, "max_objects": 3}


def server_config(**sections: dict[str, object]) -> BridgeConfig:
    """Defaults (tiny random models) on CPU, bound to a free loopback port unless ``server`` says otherwise."""
    merged: dict[str, dict[str, object]] = {"server": {"bind": "tcp://127.0.0.1:*"}, "device": {"device": "cpu"}}
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    return with_overrides(BridgeConfig(), **merged)


def image_bytes(width: int = 96, height: int = 64, fmt: str = "PNG") -> bytes:
    """A white image with a red square: (H, W, 3) uint8 encoded as PNG/JPEG/..."""
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (220, 20, 20)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="session")
def inference_server() -> Iterator[object]:
    from bridge.server import InferenceServer

    server = InferenceServer(server_config())
    server.start()
    assert server.wait_ready(180), "inference server did not become ready"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(inference_server: object) -> HttpSettings:
    return HttpSettings(server_endpoint=inference_server.endpoint, request_timeout_s=60.0)  # type: ignore[attr-defined]


AppBody = Callable[[TestClient], Awaitable[None]]


def run_app(settings: HttpSettings, body: AppBody, app_hook: Callable[[web.Application], None] | None = None) -> None:
    """Start the app on aiohttp's test server, run ``body(client)``, shut everything down."""

    async def main() -> None:
        app = create_app(settings)
        if app_hook is not None:
            app_hook(app)
        async with TestClient(TestServer(app)) as client:
            await body(client)

    asyncio.run(main())


@pytest.fixture()
def run(settings: HttpSettings) -> Callable[..., None]:
    def runner(body: AppBody, **overrides: object) -> None:
        run_app(replace(settings, **overrides), body)  # type: ignore[arg-type]

    return runner


class LiveHttp:
    """The app served on a real port from a background thread (for browsers and sync clients)."""

    def __init__(self, settings: HttpSettings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="live-http", daemon=True)
        self._runner: web.AppRunner | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(create_app(self._settings))
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> LiveHttp:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture(scope="session")
def live_http(settings: HttpSettings) -> Iterator[LiveHttp]:
    live = LiveHttp(settings).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and logs kept for people: $VTLA_ARTIFACTS/http, else tests/artifacts/http (git-ignored)."""
    root = os.environ.get("VTLA_ARTIFACTS") or str(Path(__file__).resolve().parents[2] / "artifacts")
    path = Path(root) / "http"
    path.mkdir(parents=True, exist_ok=True)
    return path
