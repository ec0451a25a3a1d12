"""Fixtures shared by all tests: real servers on real sockets, with injectable models."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.config import BridgeConfig, with_overrides
from bridge.server import InferenceServer
from tests.doubles import EchoPolicy, WordGenerator

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

StartServer = Callable[..., InferenceServer]


def free_port() -> int:
    """A loopback TCP port free right now (for servers started as separate processes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_config(**sections: dict[str, Any]) -> BridgeConfig:
    base = with_overrides(BridgeConfig(), server={"bind": "tcp://127.0.0.1:*", "shutdown_grace_s": 2.0})
    return with_overrides(base, **sections) if sections else base


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start InferenceServers; stopped at teardown.

    Models are test doubles (EchoPolicy, WordGenerator) unless given, or unless ``real_policy`` /
    ``real_generator`` ask for the configured real ones (the tiny presets by default).
    """
    servers: list[InferenceServer] = []

    def start(
        policy: Any = None,
        generator: Any = None,
        real_policy: bool = False,
        real_generator: bool = False,
        **sections: dict[str, Any],
    ) -> InferenceServer:
        config = server_config(**sections)
        kwargs: dict[str, Any] = {}
        if not real_policy:
            the_policy = policy or EchoPolicy()
            kwargs["load_policy"] = lambda *a: the_policy
        if not real_generator:
            the_generator = generator or WordGenerator()
            kwargs["load_generator"] = lambda *a: the_generator
        server = InferenceServer(config, **kwargs)
        server.start()
        servers.append(server)
        assert server.wait_ready(120), server.loop.state.detail
        return server

    yield start
    for server in servers:
        server.stop()
