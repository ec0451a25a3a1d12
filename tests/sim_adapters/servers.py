"""An in-process inference server for the closed-loop tests, on an ephemeral loopback port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.config import load_config, with_overrides
from bridge.server import InferenceServer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def start_server(config_name: str, policy: dict[str, Any] | None = None, **kwargs: Any) -> InferenceServer:
    config = with_overrides(load_config(CONFIGS / config_name), server={"bind": "tcp://127.0.0.1:*"})
    if policy:
        config = with_overrides(config, policy=policy)
    server = InferenceServer(config, **kwargs)
    server.start()
    assert server.wait_ready(60), server.loop.state.detail
    return server
