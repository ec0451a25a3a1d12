"""The transport floor: a bare pyzmq ROUTER that echoes every message, in its own process.

The client sends exactly the frames ``BridgeClient.act`` would send (header + the frame as its
own zero-copy part) over a DEALER socket and waits for them to come back. No decoding, no
queues, no threads: what any ZeroMQ service pays at least.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import zmq

from bench.lifecycle import StartStop
from bench.processes import free_tcp_port

STOP = b"__stop__"


def _echo_main(endpoint: str, ready: Any) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    try:
        while True:
            frames = sock.recv_multipart(copy=False)
            sock.send_multipart(frames, copy=False)
            if len(frames) == 3 and frames[2].bytes == STOP:
                return
    finally:
        sock.close(linger=0)
        context.term()


class EchoServer(StartStop):
    """``with EchoServer() as echo: EchoClient(echo.endpoint)`` — a ROUTER echo in a spawned process."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        ctx = mp.get_context("spawn")
        self._ready = ctx.Event()
        self._process = ctx.Process(target=_echo_main, args=(self.endpoint, self._ready), daemon=True)

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
        self._socket.connect(endpoint)

    def round_trip_ms(self, frames: Sequence[Any], timeout_s: float = 10.0) -> float:
        """Send ``[b"", header, buffers...]`` and wait for the echo; milliseconds."""
        start = time.perf_counter()
        self._socket.send_multipart(list(frames), copy=False)
        if not self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no echo within {timeout_s} s")
        reply = self._socket.recv_multipart(copy=False)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if len(reply) != len(frames):
            raise RuntimeError(f"echo returned {len(reply)} frames, sent {len(frames)}")
        return elapsed_ms

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> EchoClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
