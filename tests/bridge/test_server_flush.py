"""The I/O thread's flush on real sockets: ``act`` replies go out ahead of stream chunks queued
before them, and a long run of chunks yields to waiting requests without losing or reordering any."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from bridge.codec import decode_header
from bridge.server import _BULK_SLICE, InferenceServer
from bridge.work import Work
from tests.conftest import server_config

CHUNKS = 5 * _BULK_SLICE


@pytest.fixture
def sockets() -> Iterator[tuple[InferenceServer, zmq.Socket, zmq.Socket, zmq.Socket]]:
    ctx = zmq.Context()
    server = InferenceServer(server_config(), context=ctx)  # not started: its flush runs on the sockets below
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.ROUTING_ID, b"robot")
    other = ctx.socket(zmq.DEALER)
    for sock in (client, other):
        sock.connect(f"tcp://127.0.0.1:{port}")
    client.send_multipart([b"", b"hello"])  # the ROUTER learns the route to "robot"
    assert router.poll(5000)
    router.recv_multipart()
    try:
        yield server, router, client, other
    finally:
        for sock in (router, client, other):
            sock.close(linger=0)
        server.outbox.close()
        ctx.term()


def _received(sock: zmq.Socket, count: int) -> list[dict]:
    out = []
    for _ in range(count):
        assert sock.poll(5000), f"only {len(out)} of {count} messages arrived"
        frames = sock.recv_multipart()
        out.append(decode_header(frames[1], frames[2:], 1 << 20))
    return out


def _work(request_id: int, op: str) -> Work:
    return Work([b"robot"], (b"robot",), request_id, op, 0.0, None)


def test_an_act_reply_overtakes_the_chunks_queued_before_it(sockets) -> None:
    server, router, client, _ = sockets
    stream = _work(1, "caption")
    for i in range(CHUNKS):
        server.outbox.partial(stream, f"t{i}")
    server.outbox.success(_work(2, "act"), {"actions": [[0.0] * 7]})
    assert server._flush(router) == CHUNKS + 1
    replies = _received(client, CHUNKS + 1)
    assert replies[0]["id"] == 2 and replies[0]["ok"]
    assert [r["partial"]["chunk"] for r in replies[1:]] == [f"t{i}" for i in range(CHUNKS)]


def test_chunks_yield_to_a_waiting_request_and_none_is_lost(sockets) -> None:
    server, router, client, other = sockets
    stream = _work(1, "caption")
    for i in range(CHUNKS):
        server.outbox.partial(stream, f"t{i}")
    other.send_multipart([b"", b"a request waiting to be read"])
    assert router.poll(5000)
    assert server._flush(router) == _BULK_SLICE  # one slice, then the I/O thread reads
    assert len(server._unsent) == CHUNKS - _BULK_SLICE
    server.outbox.partial(stream, "later")  # queued meanwhile: after the ones left unsent
    assert server._flush(router, yield_to_input=False) == CHUNKS - _BULK_SLICE + 1
    chunks = [r["partial"]["chunk"] for r in _received(client, CHUNKS + 1)]
    assert chunks == [f"t{i}" for i in range(CHUNKS)] + ["later"]
