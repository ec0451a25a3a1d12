"""A protocol client written only from docs/protocol.md: raw pyzmq + msgpack, nothing from bridge/."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import zmq


def ndarray(arr: np.ndarray) -> dict[bytes, Any]:
    return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}


def frame_ref(arr: np.ndarray, index: int) -> dict[str, Any]:
    return {"__ndarray__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "frame": index}


def unpack_hook(frames: list[bytes]) -> Any:
    def hook(obj: dict) -> Any:
        if b"__ndarray__" in obj:
            data = obj[b"data"] if b"data" in obj else frames[obj[b"frame"]]
            return np.frombuffer(data, dtype=obj[b"dtype"]).reshape(obj[b"shape"])
        return obj

    return hook


class RawDealer:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, header: Any, *buffers: bytes, raw_header: bytes | None = None) -> None:
        blob = raw_header if raw_header is not None else msgpack.packb(header, use_bin_type=True)
        self.sock.send_multipart([b"", blob, *buffers])

    def recv(self, timeout_ms: int = 5000) -> dict[str, Any]:
        assert self.sock.poll(timeout_ms), "no reply"
        frames = self.sock.recv_multipart()
        assert frames[0] == b""
        return msgpack.unpackb(frames[1], raw=False, object_hook=unpack_hook(frames[2:]))

    def request(self, header: Any, *buffers: bytes, timeout_ms: int = 5000) -> dict[str, Any]:
        self.send(header, *buffers)
        return self.recv(timeout_ms)

    def close(self) -> None:
        self.sock.close(linger=0)
