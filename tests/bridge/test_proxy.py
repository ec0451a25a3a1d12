"""``vtla-bridge proxy`` as a real process in front of three real servers (loopback, free ports)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from bridge.client import BridgeClient
from bridge.messages import build_request, parse_reply
from bridge.server import InferenceServer

REPO_ROOT = Path(__file__).resolve().parents[2]
FRAME = np.zeros((32, 32, 3), dtype=np.uint8)


def start_proxy(backends: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "proxy", "--frontend", "tcp://127.0.0.1:0", "--backend", ",".join(backends),
         "--heartbeat-s", "0.5"],
        cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"frontend (tcp://\S+)", line)
        if match:
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the proxy did not print its frontend")


@pytest.fixture
def three_servers(start_server: Any) -> list[InferenceServer]:
    return [start_server() for _ in range(3)]


@pytest.fixture
def proxy(three_servers: list[InferenceServer]) -> Iterator[str]:
    proc, frontend = start_proxy([s.endpoint for s in three_servers])
    try:
        yield frontend
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # stops cleanly on SIGTERM


def test_proxy_spreads_requests_over_three_servers(three_servers, proxy) -> None:
    time.sleep(0.3)  # let the proxy's DEALER finish connecting to all three (IMMEDIATE skips the others)
    with BridgeClient(proxy, timeout_s=5.0) as client:
        for _ in range(30):
            result = client.act(image=FRAME)
            assert result.action.shape == (7,)
        assert client.health()["status"] == "ok"
    counts = [s.loop.state.counters["act_requests"] for s in three_servers]
    assert sum(counts) == 30
    assert min(counts) >= 5, counts  # round-robin: each backend took a share


def test_a_req_client_works_through_the_proxy(proxy) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(proxy)
    try:
        sock.send_multipart(build_request(7, "hello", None, None, None, None))
        assert sock.poll(5000)
        frames = sock.recv_multipart(copy=False)
        reply_id, header = parse_reply([b"", *frames])
        assert reply_id == 7 and header["ok"] and "act" in header["result"]["ops"]
    finally:
        sock.close()
        context.term()


def test_proxy_skips_a_stopped_backend(three_servers, proxy) -> None:
    time.sleep(0.3)
    three_servers[0].stop()
    time.sleep(0.5)  # the disconnect reaches the proxy's DEALER
    with BridgeClient(proxy, timeout_s=5.0) as client:
        for _ in range(20):
            client.act(image=FRAME)
    counts = [s.loop.state.counters["act_requests"] for s in three_servers[1:]]
    assert sum(counts) == 20 and min(counts) >= 5, counts  # none waited on the stopped one


def test_proxies_start_and_stop_repeatedly_in_one_process() -> None:
    from bridge.proxy import ZmqProxy

    for _ in range(5):  # each has its own control endpoint: no "address in use"
        proxy = ZmqProxy("tcp://127.0.0.1:0", ["tcp://127.0.0.1:9"]).start()
        assert proxy.frontend.startswith("tcp://127.0.0.1:")
        proxy.stop()
