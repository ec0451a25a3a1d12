"""Thousands of random and mutated frames: the server answers what it can, never dies, and a
well-behaved client talking at the same time keeps getting correct answers."""

from __future__ import annotations

import itertools
import threading
import time

import msgpack
import numpy as np
import zmq

from bridge.client import BridgeClient
from tests.bridge.raw import frame_ref, ndarray
from tests.conftest import StartServer

VALID = [
    {"v": 1, "id": 1, "op": "act", "args": {"image": ndarray(np.zeros((8, 8, 3), np.uint8)), "instruction": "go"}},
    {"v": 1, "id": "x", "op": "caption", "args": {"image": ndarray(np.zeros((8, 8, 3), np.uint8)), "length": "short"}},
    {"v": 1, "id": 2, "op": "act", "args": {"image": frame_ref(np.zeros((4, 4, 3), np.uint8), 0),
                                            "tactile": {"force_torque": [0, 0, 0, 0, 0, 0]}}},
]


def random_value(rng: np.random.Generator, depth: int = 0) -> object:
    kind = rng.integers(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.integers(-(2**62), 2**62))
    if kind == 3:
        return float(rng.normal()) * 1e6
    if kind == 4:
        return rng.bytes(int(rng.integers(0, 40)))
    if kind == 5:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, int(rng.integers(0, 12))))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    keys = ["v", "id", "op", "args", "image", "__ndarray__", "dtype", "shape", "frame", "data", "__image__",
            "tactile", "force_torque", "deadline_ms", "settings", "stream"]
    return {str(rng.choice(keys)): random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))}


def mutate(rng: np.random.Generator, blob: bytes) -> bytes:
    data = bytearray(blob)
    for _ in range(int(rng.integers(1, 6))):
        op = rng.integers(0, 3)
        pos = int(rng.integers(0, max(1, len(data))))
        if op == 0 and data:
            data[pos] = int(rng.integers(0, 256))
        elif op == 1:
            data[pos:pos] = rng.bytes(int(rng.integers(1, 8)))
        elif data:
            del data[pos:pos + int(rng.integers(1, 8))]
    return bytes(data)


def test_random_frames_never_kill_the_server(start_server: StartServer) -> None:
    server = start_server()
    rng = np.random.default_rng(1234)
    ctx = zmq.Context()
    fuzzer = ctx.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.connect(server.endpoint)
    good_results: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def good_client() -> None:
        try:
            with BridgeClient(server.endpoint, timeout_s=10) as client:
                k = 0
                while not stop.is_set():
                    value = k % 256
                    result = client.act(image=np.full((8, 8, 3), value, np.uint8))
                    assert abs(result.action[0] - value / 255) < 1e-6
                    good_results.append(result.round_trip_ms)
                    k += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=good_client)
    thread.start()
    sent = 0
    # 3,000 hostile frames, and on until the good client has had 20 answers while they keep coming
    # (how many fit into the 3,000 depends on the host's speed, not on the server)
    deadline_s = time.monotonic() + 120
    try:
        for i in itertools.count():
            if i >= 3000 and (len(good_results) >= 20 or time.monotonic() > deadline_s):
                break
            style = i % 4
            if style == 0:
                frames = [b"", rng.bytes(int(rng.integers(0, 64)))]
            elif style == 1:
                frames = [b"", msgpack.packb(random_value(rng), use_bin_type=True)]
            elif style == 2:
                frames = [b"", mutate(rng, msgpack.packb(VALID[i % len(VALID)], use_bin_type=True))]
            else:
                frames = [b"", msgpack.packb(VALID[2], use_bin_type=True)] + [
                    rng.bytes(int(rng.integers(0, 60))) for _ in range(int(rng.integers(0, 3)))]
                if rng.integers(0, 4) == 0:
                    frames = frames[1:]  # no delimiter
            fuzzer.send_multipart(frames)
            sent += 1
            while fuzzer.poll(0):
                fuzzer.recv_multipart()
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert len(good_results) >= 20, f"the good client got {len(good_results)} answers during the fuzzing"
    with BridgeClient(server.endpoint, timeout_s=5) as client:
        health = client.health()
        assert health["status"] == "ok"
        assert client.act(image=np.full((8, 8, 3), 255, np.uint8)).action[0] == 1.0
    assert server.loop.alive and sent >= 3000
    fuzzer.close()
    ctx.term()


def test_every_parseable_request_gets_exactly_one_final_reply(start_server: StartServer) -> None:
    server = start_server()
    rng = np.random.default_rng(7)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    n = 300
    for i in range(n):
        header = dict(VALID[i % 2])
        header["id"] = i
        if i % 3 == 0:
            header["args"] = random_value(rng)
        sock.send_multipart([b"", msgpack.packb(header, use_bin_type=True)])
    finals: dict[int, int] = {}
    while len(finals) < n and sock.poll(10000):
        reply = msgpack.unpackb(sock.recv_multipart()[1], raw=False)
        if "partial" not in reply:
            finals[reply["id"]] = finals.get(reply["id"], 0) + 1
    assert sorted(finals) == list(range(n))
    assert set(finals.values()) == {1}
    assert not sock.poll(300)  # and nothing more
    sock.close()
    ctx.term()
