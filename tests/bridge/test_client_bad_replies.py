"""Both clients survive bad replies (issue 11, item 10): a server that answers garbage makes the one
call fail with a BridgeError subclass, and the next call on the same client works.

The "server" is a real ROUTER socket on loopback that answers from a script, so the replies can
be as broken as a buggy or hostile peer makes them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from bridge.aio_client import AsyncBridgeClient
from bridge.client import BridgeClient
from bridge.errors import BridgeError, BridgeTimeout, ProtocolViolation


def _deep(n: int) -> object:
    value: object = 1
    for _ in range(n):
        value = [value]
    return value


def _script(rid: object) -> list[list[bytes]]:
    """Bad replies for the first calls, then good ones (one entry per request received)."""
    good = msgpack.packb({"v": 1, "id": rid, "ok": True, "result": {"n": 1}, "timing": {}})
    return [
        [b"", b"\xc1\xc1 not msgpack"],
        [b"", msgpack.packb({"v": 1, "id": rid, "ok": True, "partial": 5})],
        [b"", msgpack.packb({"v": 1, "id": rid, "ok": False, "error": ["x"]})],
        [b"", msgpack.packb({"v": 1, "id": rid, "ok": True, "result": _deep(500)})],
        [b"", msgpack.packb({"unrelated": _deep(900)})],
        [b"", good],
    ]


BAD_REPLIES = 5


@pytest.fixture
def scripted_server() -> Iterator[str]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        count = 0
        while not stop.is_set():
            if not sock.poll(50):
                continue
            envelope_and_body = sock.recv_multipart()
            split = envelope_and_body.index(b"")
            header = msgpack.unpackb(envelope_and_body[split + 1])
            if header.get("op") == "cancel":
                continue
            replies = _script(header["id"])
            reply = replies[min(count, len(replies) - 1)]
            count += 1
            sock.send_multipart([*envelope_and_body[:split], *reply])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{port}"
    stop.set()
    thread.join(5)
    sock.close(linger=0)
    ctx.term()


def test_sync_client_raises_a_bridge_error_per_bad_reply_and_keeps_working(scripted_server: str) -> None:
    with BridgeClient(scripted_server, timeout_s=2.0) as client:
        for _ in range(BAD_REPLIES - 1):
            with pytest.raises(ProtocolViolation):
                client.call("hello")
        # a reply that is not a protocol reply at all: the call cannot be told, so it times out
        with pytest.raises(BridgeError):
            client.call("hello", timeout_s=0.5)
        assert client.call("hello").result == {"n": 1}


def test_async_client_reader_survives_bad_replies(scripted_server: str) -> None:
    async def run() -> None:
        async with AsyncBridgeClient(scripted_server, timeout_s=2.0) as client:
            # undecodable: no id to route it by, so the call that waited for it times out
            with pytest.raises(BridgeTimeout):
                await client.call("hello", timeout_s=0.5)
            for _ in range(3):  # decodable, right id, malformed fields: that call fails, typed
                with pytest.raises(ProtocolViolation):
                    await client.call("hello")
            with pytest.raises(BridgeTimeout):
                await client.call("hello", timeout_s=0.5)
            assert (await client.call("hello")).result == {"n": 1}

    asyncio.run(run())
