"""Several servers behind one client: spreading, failover, the return of a server, sticky sessions.

Real server processes (``python -m bridge serve`` with the benchmark null policy) on loopback
ports, killed with SIGKILL as a crash would; in-process servers where a server must come back on
the same endpoint.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.processes import NULL_POLICY_KIND, ServerProcess, server_table
from bridge.aio_client import AsyncBridgeClient
from bridge.client import BridgeClient
from bridge.config import with_overrides
from bridge.endpoints import EndpointPool, PoolPolicy, endpoint_list
from bridge.server import InferenceServer
from tests.conftest import server_config
from tests.doubles import EchoPolicy

FRAME = np.zeros((32, 32, 3), dtype=np.uint8)
FAST = PoolPolicy(probe_interval_s=0.1, probe_timeout_s=0.5)


def _acts(server: InferenceServer | ServerProcess) -> int:
    with BridgeClient(server.endpoint, timeout_s=5.0) as probe:
        return int(probe.health()["counters"]["act_requests"])


@pytest.fixture
def two_server_processes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    table = server_table(policy={"kind": NULL_POLICY_KIND, "options": {"image_size": 32}})
    servers = [ServerProcess(f"server{i}", table, tmp_path) for i in range(2)]
    try:
        for server in servers:
            server.launch()  # both import torch at once
        for server in servers:
            server.wait_ready(120)
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_endpoint_list_accepts_a_list_or_commas_and_refuses_nonsense() -> None:
    assert endpoint_list("tcp://a:1") == ("tcp://a:1",)
    assert endpoint_list("tcp://a:1, tcp://b:2") == ("tcp://a:1", "tcp://b:2")
    assert endpoint_list(["tcp://a:1", "tcp://b:2"]) == ("tcp://a:1", "tcp://b:2")
    for bad in ("", ",", ["tcp://a:1", "tcp://a:1"], ["tcp://a:1", ""]):
        with pytest.raises(ValueError):
            endpoint_list(bad)


def test_pool_prefers_the_least_loaded_healthy_server_and_pins_sessions() -> None:
    pool = EndpointPool(["a", "b", "c"])
    assert sorted(str(pool.pick()) for _ in range(3)) == ["a", "b", "c"]  # idle: rotates
    pool.begin("a")
    pool.begin("b")
    assert {pool.pick() for _ in range(5)} == {"c"}  # fewest in flight
    first = pool.pick(session="s1")
    assert first is not None
    assert all(pool.pick(session="s1") == first for _ in range(10))
    pool.mark_down(first, "test")
    moved = pool.pick(session="s1")
    assert moved != first and pool.session_endpoint("s1") == moved
    assert pool.pick(exclude=frozenset({"a", "b", "c"})) is None
    for ep in ("a", "b", "c"):
        pool.mark_down(ep, "test")
    assert pool.pick() in ("a", "b", "c")  # all down: requests still go out (they probe)


def test_two_server_processes_kill_one_every_later_request_succeeds(two_server_processes) -> None:
    a, b = two_server_processes
    with BridgeClient([a.endpoint, b.endpoint], timeout_s=1.0, pool_policy=FAST) as client:
        for _ in range(20):
            assert client.act(image=FRAME).action.shape == (7,)
        before = {a.endpoint: _acts(a), b.endpoint: _acts(b)}
        assert min(before.values()) >= 5, before  # both servers took a share
        assert a.pid is not None
        os.kill(a.pid, signal.SIGKILL)
        started = time.monotonic()
        for _ in range(40):  # the first one may wait a timeout on the dead server, then is retried
            assert client.act(image=FRAME).action.shape == (7,)
        assert time.monotonic() - started < 15.0
        assert client._router is not None and client._router.pool.down() == [a.endpoint]
        assert _acts(b) >= before[b.endpoint] + 40
        assert client.health()["status"] == "ok"


def test_async_client_many_in_flight_survives_a_killed_server(two_server_processes) -> None:
    """16 clients with requests in flight when one server is SIGKILLed: none is lost, and the
    lost TCP connection fails them over at once — long before the 10 s request timeout."""
    a, b = two_server_processes
    timeout_s = 10.0
    killed_at: list[float] = []

    async def drive() -> list[int]:
        client = AsyncBridgeClient([a.endpoint, b.endpoint], timeout_s=timeout_s, pool_policy=FAST)

        async def worker(index: int) -> int:
            done = 0
            for step in range(30):
                if index == 0 and step == 5:
                    assert a.pid is not None
                    os.kill(a.pid, signal.SIGKILL)  # under load: requests are in flight on it
                    killed_at.append(time.monotonic())
                result = await client.act(image=FRAME)
                assert result.action.shape == (7,)
                done += 1
            return done

        try:
            return list(await asyncio.gather(*(worker(i) for i in range(16))))
        finally:
            await client.close()

    assert asyncio.run(drive()) == [30] * 16  # not one request lost
    assert time.monotonic() - killed_at[0] < timeout_s / 2


def test_a_server_that_comes_back_gets_traffic_again() -> None:
    cfg = server_config(vlm={"enabled": False})
    first = InferenceServer(cfg, load_policy=lambda *a: EchoPolicy())
    other = InferenceServer(cfg, load_policy=lambda *a: EchoPolicy())
    first.start()
    other.start()
    revived: InferenceServer | None = None
    try:
        assert first.wait_ready(30) and other.wait_ready(30)
        endpoint = first.endpoint
        with BridgeClient([endpoint, other.endpoint], timeout_s=0.5, pool_policy=FAST) as client:
            assert client._router is not None
            client.act(image=FRAME)
            first.stop()
            for _ in range(6):
                client.act(image=FRAME)
            assert client._router.pool.down() == [endpoint]
            revived = InferenceServer(with_overrides(cfg, server={"bind": endpoint}),
                                      load_policy=lambda *a: EchoPolicy())
            revived.start()
            assert revived.wait_ready(30)
            deadline = time.monotonic() + 10.0
            while client._router.pool.down() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client._router.pool.down() == []  # the prober saw it answer health
            for _ in range(10):
                client.act(image=FRAME)
            assert revived.loop.state.counters["act_requests"] >= 3
    finally:
        for server in (first, other, revived):
            if server is not None:
                server.stop()


def test_sessions_stick_to_one_server(start_server) -> None:
    servers = [start_server(), start_server()]
    with BridgeClient([s.endpoint for s in servers], timeout_s=5.0) as client:
        for session in ("ep-0", "ep-1", "ep-2", "ep-3"):
            client.reset(session)
            for _ in range(5):
                client.act(image=FRAME, session=session)
        assert client._router is not None
        pinned = {s: client._router.pool.session_endpoint(s) for s in ("ep-0", "ep-1", "ep-2", "ep-3")}
    counts = {s.endpoint: s.loop.state.counters["act_requests"] for s in servers}
    expected = {ep: 5 * sum(1 for p in pinned.values() if p == ep) for ep in counts}
    assert counts == expected  # every act of a session went where its reset went
    assert len(set(pinned.values())) == 2  # and sessions are spread
