"""The transport floor: a bare pyzmq ROUTER that echoes every message, in its own process.

The client sends exactly the frames ``BridgeClient.act`` would send (header + the frame as its
own part) over a DEALER socket and waits for them to come back. No decoding, no queues, no
threads: what any ZeroMQ service pays at least.

With ``pause_ms`` the echo first sleeps that long, as a server does for a flat-cost forward, and
appends one frame holding the pause it measured (float64 ms): the floor for a policy that takes
time, whose idle threads and CPUs wake up cold afterwards (``round trip − pause`` is comparable
with a server's ``round trip − compute``).
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import zmq

from bench.lifecycle import StartStop
from bench.processes import free_tcp_port
from bridge.codec import SEND_COPY_MAX_BYTES

STOP = b"__stop__"


def _echo_main(endpoint: str, ready: Any, pause_ms: float) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    try:
        while True:
            frames: list[Any] = sock.recv_multipart(copy=False)
            stop = len(frames) == 3 and frames[2].bytes == STOP
            if pause_ms > 0 and not stop:
                start = time.perf_counter()
                time.sleep(pause_ms / 1000.0)
                frames.append(struct.pack("<d", (time.perf_counter() - start) * 1000.0))
            sock.send_multipart(frames, copy=False)
            if stop:
                return
    finally:
        sock.close(linger=0)
        context.term()


class EchoServer(StartStop):
    """``with EchoServer() as echo: EchoClient(echo.endpoint)`` — a ROUTER echo in a spawned process
    (``pause_ms``: it sleeps that long before each echo and appends the pause it measured)."""

    def __init__(self, pause_ms: float = 0.0) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.pause_ms = pause_ms
        ctx = mp.get_context("spawn")
        self._ready = ctx.Event()
        self._process = ctx.Process(target=_echo_main, args=(self.endpoint, self._ready, pause_ms), daemon=True)

    def start(self, timeout_s: float = 30.0) -> EchoServer:
        self._process.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self._process.terminate()
                raise RuntimeError(
                    f"echo server did not bind {self.endpoint} (exit code {self._process.exitcode})"
                )
        return self

    def stop(self) -> None:
        if self._process.is_alive():
            with EchoClient(self.endpoint) as client:
                client.round_trip_ms([b"", STOP], timeout_s=2.0)
            self._process.join(5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)


class EchoClient:
    def __init__(self, endpoint: str) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.copy_threshold = SEND_COPY_MAX_BYTES  # the floor sends as the bridge's clients do
        self._socket.connect(endpoint)

    def round_trip_ms(self, frames: Sequence[Any], timeout_s: float = 10.0) -> float:
        """Send ``[b"", header, buffers...]`` and wait for the echo; milliseconds."""
        return self.exchange(frames, timeout_s)[0]

    def exchange(self, frames: Sequence[Any], timeout_s: float = 10.0) -> tuple[float, float]:
        """Send ``[b"", header, buffers...]``, wait for the echo -> (round trip ms, the server's
        measured pause ms: 0.0 from an echo without ``pause_ms``)."""
        start = time.perf_counter()
        self._socket.send_multipart(list(frames), copy=False)
        if not self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no echo within {timeout_s} s")
        reply = self._socket.recv_multipart(copy=False)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        pause_ms = 0.0
        if len(reply) == len(frames) + 1:
            (pause_ms,) = struct.unpack("<d", reply[-1].bytes)
        elif len(reply) != len(frames):
            raise RuntimeError(f"echo returned {len(reply)} frames, sent {len(frames)}")
        return elapsed_ms, pause_ms

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> EchoClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
