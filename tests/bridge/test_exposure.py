"""A listener beyond loopback without authentication warns loudly at start-up (issue 11, item 9)."""

from __future__ import annotations

import logging

import pytest

from bridge.exposure import endpoint_is_local, host_is_loopback, warn_if_exposed
from tests.conftest import StartServer


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [("tcp://127.0.0.1:5555", True), ("tcp://localhost:1", True), ("tcp://[::1]:5", True),
     ("ipc:///tmp/x", True), ("inproc://a", True), ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False),
     ("tcp://10.1.2.3:5", False), ("tcp://eth0:5", False)],
)
def test_endpoint_locality(endpoint: str, local: bool) -> None:
    assert endpoint_is_local(endpoint) is local


def test_host_locality() -> None:
    assert host_is_loopback("127.0.0.1") and host_is_loopback("::1")
    assert not host_is_loopback("0.0.0.0") and not host_is_loopback("")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return [m for m in messages if "AUTHENTICATION" in m]


def test_loopback_server_does_not_warn(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.server")
    start_server(server={"bind": "tcp://127.0.0.1:*"})
    assert not _warnings(caplog)


def test_warning_for_exposed_unauthenticated_listeners(caplog: pytest.LogCaptureFixture) -> None:
    # (tests bind loopback only: the server and the companion call exactly this with their endpoint)
    log = logging.getLogger("bridge.server")
    caplog.set_level(logging.WARNING)
    assert warn_if_exposed(log, "the inference server", "tcp://0.0.0.0:5555", False, False)
    assert not warn_if_exposed(log, "the inference server", "tcp://0.0.0.0:5555", False, True)
    assert not warn_if_exposed(log, "the HTTP companion", "http://127.0.0.1:8000", True, False)
    assert len(_warnings(caplog)) == 1 and "tcp://0.0.0.0:5555" in _warnings(caplog)[0]
