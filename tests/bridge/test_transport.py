"""Real sockets end to end: REQ, DEALER, a proxy in between, pipelining, batching across clients,
deadlines, overload, per-client limits and recovery after a server restart."""

from __future__ import annotations

import asyncio
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from bridge.aio_client import AsyncBridgeClient
from bridge.client import BridgeClient
from bridge.errors import BridgeError, BridgeTimeout
from bridge.protocol import ErrorCode
from bridge.server import InferenceServer
from tests.bridge.raw import RawDealer, ndarray
from tests.conftest import StartServer, server_config
from tests.doubles import EchoPolicy


def image(value: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def test_req_socket_works_unchanged(start_server: StartServer) -> None:
    server = start_server()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        for i in range(3):
            sock.send(msgpack.packb({"v": 1, "id": i, "op": "act", "args": {"image": ndarray(image(51))}}))
            assert sock.poll(5000)
            reply = msgpack.unpackb(sock.recv(), raw=False)
            assert reply["ok"] and reply["id"] == i
            action = np.frombuffer(reply["result"]["action"][b"data"], np.float32)
            assert action[0] == pytest.approx(0.2)
    finally:
        sock.close()
        ctx.term()


def test_through_a_router_dealer_proxy(start_server: StartServer) -> None:
    server = start_server()
    ctx = zmq.Context()
    frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    port = frontend.bind_to_random_port("tcp://127.0.0.1")
    backend.connect(server.endpoint)

    def run_proxy() -> None:
        try:
            zmq.proxy(frontend, backend)
        except zmq.ContextTerminated:
            frontend.close(linger=0)
            backend.close(linger=0)

    proxy = threading.Thread(target=run_proxy, daemon=True)
    proxy.start()
    try:
        with BridgeClient(f"tcp://127.0.0.1:{port}", timeout_s=5, context=ctx) as client:
            for value in (0, 255):
                result = client.act(image=image(value), instruction="abc")
                assert result.action[0] == pytest.approx(value / 255) and result.action[1] == 3
        req = ctx.socket(zmq.REQ)  # REQ -> proxy -> server: two identity frames in the envelope
        req.connect(f"tcp://127.0.0.1:{port}")
        req.send(msgpack.packb({"v": 1, "id": "via-proxy", "op": "health"}))
        assert req.poll(5000)
        assert msgpack.unpackb(req.recv(), raw=False)["id"] == "via-proxy"
        req.close(linger=0)
    finally:
        ctx.term()  # closes the proxy sockets; zmq.proxy returns with ETERM


def test_40_pipelined_requests_are_matched_by_id(start_server: StartServer) -> None:
    server = start_server(policy=EchoPolicy(per_item_s=0.001))

    async def run() -> list[float]:
        async with AsyncBridgeClient(server.endpoint, timeout_s=10) as client:
            results = await asyncio.gather(
                *(client.act(image=image(i * 6), instruction="x" * i) for i in range(40))
            )
            return [float(r.action[1]) for r in results]

    assert asyncio.run(run()) == [float(i) for i in range(40)]


def test_16_concurrent_clients_are_batched(start_server: StartServer) -> None:
    policy = EchoPolicy(delay_s=0.02)
    server = start_server(policy=policy)
    errors: list[BaseException] = []
    batch_sizes: list[int] = []
    barrier = threading.Barrier(16)

    def client_main(k: int) -> None:
        try:
            with BridgeClient(server.endpoint, timeout_s=10) as client:
                barrier.wait()
                for _ in range(5):
                    result = client.act(image=image(k * 10), instruction="i" * k)
                    assert result.action[1] == k  # its own answer, not a neighbour's
                    batch_sizes.append(int(result.timing["batch_size"]))
                    assert result.action[6] == result.timing["bucket"]  # the forward ran padded rows
                    assert result.timing["batch_size"] <= result.timing["bucket"] < 2 * result.timing["batch_size"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_main, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(batch_sizes) == 80
    assert max(batch_sizes) > 1 and max(policy.batches) > 1
    assert sum(policy.batches) >= 80 and len(policy.batches) < 80
    assert all(b & (b - 1) == 0 for b in policy.batches)  # padded to 1, 2, 4, 8, 16


def test_different_shapes_go_to_different_batches(start_server: StartServer) -> None:
    policy = EchoPolicy(delay_s=0.05)
    server = start_server(policy=policy, scheduler={"pad_batches": False})

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint) as client:
            await client.act(image=image(1))  # occupies the loop while the rest queue up
            small = [client.act(image=image(1, (8, 8))) for _ in range(3)]
            large = [client.act(image=image(1, (12, 12))) for _ in range(3)]
            results = await asyncio.gather(*small, *large)
            assert all(r.timing["batch_size"] <= 3 for r in results)

    asyncio.run(run())
    assert sum(policy.batches) == 7


def test_deadline_exceeded_while_queued(start_server: StartServer) -> None:
    server = start_server(policy=EchoPolicy(delay_s=0.3))

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint) as client:
            slow = asyncio.ensure_future(client.act(image=image(1)))
            await asyncio.sleep(0.05)
            with pytest.raises(BridgeError) as info:
                await client.act(image=image(2), deadline_ms=50)
            assert info.value.code == ErrorCode.DEADLINE_EXCEEDED and info.value.retryable
            await slow
            ok = await client.act(image=image(3), deadline_ms=5000)
            assert ok.action[0] == pytest.approx(3 / 255)

    asyncio.run(run())


def test_overload_is_answered_at_once(start_server: StartServer) -> None:
    server = start_server(policy=EchoPolicy(delay_s=0.2), server={"max_inflight": 4, "max_inflight_per_client": 4})

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint, timeout_s=10) as client:
            t0 = time.perf_counter()
            outcomes = await asyncio.gather(*(client.act(image=image(i)) for i in range(12)), return_exceptions=True)
            overloaded = [o for o in outcomes if isinstance(o, BridgeError)]
            assert all(o.code == ErrorCode.OVERLOADED and o.retryable for o in overloaded)
            assert len(overloaded) == 8 and time.perf_counter() - t0 < 5

    asyncio.run(run())


def test_one_greedy_client_cannot_starve_another(start_server: StartServer) -> None:
    server = start_server(policy=EchoPolicy(delay_s=0.05), server={"max_inflight_per_client": 2})

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint) as greedy, AsyncBridgeClient(server.endpoint) as polite:
            flood = [greedy.act(image=image(1)) for _ in range(10)]
            outcomes = await asyncio.gather(*flood, polite.act(image=image(200)), return_exceptions=True)
            rejected = [o for o in outcomes[:-1] if isinstance(o, BridgeError)]
            assert len(rejected) == 8 and all(o.code == ErrorCode.OVERLOADED for o in rejected)
            assert not isinstance(outcomes[-1], BaseException)
            assert outcomes[-1].action[0] == pytest.approx(200 / 255)

    asyncio.run(run())


def test_sync_client_times_out_then_recovers_after_server_restart() -> None:
    ctx = zmq.Context()
    probe = ctx.socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)  # a port nothing listens on any more
    endpoint = f"tcp://127.0.0.1:{port}"
    client = BridgeClient(endpoint, timeout_s=0.3)
    try:
        with pytest.raises(BridgeTimeout):
            client.health()
        policy = EchoPolicy()
        config = server_config(server={"bind": endpoint})
        server = InferenceServer(config, load_policy=lambda *a: policy, load_generator=lambda *a: None)
        for attempt in range(2):  # start, stop, start again on the same port
            server = InferenceServer(config, load_policy=lambda *a: policy, load_generator=lambda *a: None)
            server.start()
            assert server.wait_ready(10) or server.loop.state.policy is not None
            client.timeout_s = 5
            assert client.act(image=image(255)).action[0] == pytest.approx(1.0)
            server.stop()
            client.timeout_s = 0.3
            with pytest.raises(BridgeTimeout):
                client.health()
            assert attempt in (0, 1)
    finally:
        client.close()
        ctx.term()


def test_async_client_recovers_after_server_restart() -> None:
    ctx = zmq.Context()
    probe = ctx.socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    ctx.term()
    endpoint = f"tcp://127.0.0.1:{port}"
    config = server_config(server={"bind": endpoint}, vlm={"enabled": False})

    async def run() -> None:
        async with AsyncBridgeClient(endpoint, timeout_s=0.3) as client:
            with pytest.raises(BridgeTimeout):
                await client.health()
            for _ in range(2):
                server = InferenceServer(config, load_policy=lambda *a: EchoPolicy())
                server.start()
                server.wait_ready(10)
                result = await client.act(image=image(0), timeout_s=5)
                assert result.action[0] == 0.0
                server.stop()
                with pytest.raises(BridgeTimeout):
                    await client.health()

    asyncio.run(run())


def test_stale_replies_are_discarded() -> None:
    """A reply arriving after its request timed out must not be taken as the next request's reply."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = BridgeClient(f"tcp://127.0.0.1:{port}", timeout_s=2, context=ctx)

    def fake_server() -> None:
        frames = router.recv_multipart()
        rid = msgpack.unpackb(frames[2], raw=False)["id"]
        for wrong in (rid + 100, "other"):
            reply = {"v": 1, "id": wrong, "ok": True, "result": {"wrong": True}, "timing": {}}
            router.send_multipart([frames[0], b"", msgpack.packb(reply)])
        reply = {"v": 1, "id": rid, "ok": True, "result": {"right": True}, "timing": {}}
        router.send_multipart([frames[0], b"", msgpack.packb(reply)])

    thread = threading.Thread(target=fake_server)
    thread.start()
    try:
        assert dict(client.call("hello").result) == {"right": True}
    finally:
        thread.join(5)
        client.close()
        router.close(linger=0)
        ctx.term()


@pytest.mark.parametrize(("max_wait_ms", "expected_batch"), [(0.0, 1), (300.0, 2)])
def test_max_wait_ms_lets_a_batch_wait_for_stragglers(
    start_server: StartServer, max_wait_ms: float, expected_batch: int
) -> None:
    server = start_server(batching={"max_wait_ms": max_wait_ms})

    async def run() -> list[int]:
        async with AsyncBridgeClient(server.endpoint) as client:
            first = asyncio.ensure_future(client.act(image=image(1)))
            await asyncio.sleep(0.05)  # the straggler arrives 50 ms later
            second = asyncio.ensure_future(client.act(image=image(2)))
            return [int(r.timing["batch_size"]) for r in await asyncio.gather(first, second)]

    sizes = asyncio.run(run())
    assert sizes[0] == expected_batch  # 0: the lone request never waits; 300 ms: it waits for company


def test_the_io_thread_sleeps_again_after_being_woken_to_send(start_server: StartServer) -> None:
    """Pipelined requests are answered through the Outbox's wake pipe (more than a few in flight:
    the I/O thread sends); the I/O thread must empty the pipe, or its poller returns at once
    forever and it spins on a core while the server is idle."""
    server = start_server()
    ctx = zmq.Context()
    dealer = RawDealer(ctx, server.endpoint)
    try:
        for i in range(16):
            dealer.send({"v": 1, "id": i, "op": "act", "args": {"image": ndarray(image(i))}})
        assert sorted(dealer.recv()["id"] for _ in range(16)) == list(range(16))
        time.sleep(0.2)  # the last replies are flushed
        cpu_before_s, wall_before_s = time.process_time(), time.perf_counter()
        time.sleep(1.0)
        idle_cpu = (time.process_time() - cpu_before_s) / (time.perf_counter() - wall_before_s)
        assert idle_cpu < 0.25, f"the idle server used {idle_cpu:.0%} of a core"
    finally:
        dealer.close()
        ctx.term()
