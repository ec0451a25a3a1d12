"""bridge/socket_frames.py on real sockets: the same messages, flags and errors as pyzmq's own
send_multipart / recv_multipart / poll, which it replaces on the request path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from bridge.codec import SEND_COPY_MAX_BYTES
from bridge.socket_frames import NOBLOCK, input_pending, recv_frames, send_frames, wait_readable


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.copy_threshold = SEND_COPY_MAX_BYTES
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.setsockopt(zmq.ROUTING_ID, b"client-1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(0)
    dealer.close(0)
    ctx.term()


def test_a_multipart_message_arrives_whole_in_order_small_and_large_frames(pair: Any) -> None:
    router, dealer = pair
    small = np.arange(10, dtype=np.float32)
    large = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)  # over copy_threshold: zero-copy
    send_frames(dealer, [b"", b"header", memoryview(small).cast("B"), memoryview(large)])
    assert wait_readable(router, 5000)
    frames = recv_frames(router)
    assert [f.bytes for f in frames[:3]] == [b"client-1", b"", b"header"]
    assert np.array_equal(np.frombuffer(frames[3].buffer, np.float32), small)
    assert np.array_equal(np.frombuffer(frames[4].buffer, np.uint8), large)
    assert not input_pending(router)  # one message: nothing more to read
    send_frames(router, [frames[0].bytes, b"", b"reply"], NOBLOCK)  # and back, by routing id
    assert wait_readable(dealer, 5000)
    assert [f.bytes for f in recv_frames(dealer)] == [b"", b"reply"]


def test_messages_sent_back_to_back_are_read_one_at_a_time(pair: Any) -> None:
    router, dealer = pair
    for i in range(3):
        send_frames(dealer, [b"", str(i).encode()])
    received = []
    deadline = time.monotonic() + 5
    while len(received) < 3 and time.monotonic() < deadline:
        if wait_readable(router, 100):
            while input_pending(router):
                received.append(recv_frames(router, NOBLOCK)[2].bytes)
    assert received == [b"0", b"1", b"2"]


def test_nothing_to_read_is_again_without_blocking_and_the_wait_times_out(pair: Any) -> None:
    router, _ = pair
    assert not input_pending(router)
    with pytest.raises(zmq.Again):
        recv_frames(router, NOBLOCK)
    start = time.perf_counter()
    assert not wait_readable(router, 50)
    assert 0.04 <= time.perf_counter() - start < 2.0  # it waited (and did not hang)


def test_a_send_to_a_gone_peer_raises_like_pyzmqs_own(pair: Any) -> None:
    router, _ = pair
    with pytest.raises(zmq.ZMQError) as ours:
        send_frames(router, [b"nobody", b"", b"x"], NOBLOCK)
    with pytest.raises(zmq.ZMQError) as theirs:
        router.send_multipart([b"nobody", b"", b"x"], zmq.NOBLOCK)
    assert ours.value.errno == theirs.value.errno == zmq.EHOSTUNREACH  # the server counts it as peer_gone


def test_a_frame_without_the_buffer_interface_is_a_type_error(pair: Any) -> None:
    _, dealer = pair
    with pytest.raises(TypeError):
        send_frames(dealer, ["not bytes", b""])  # type: ignore[list-item]
