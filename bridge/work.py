"""Units of work travelling from the I/O side to the inference loop, and replies travelling back.

The :class:`Outbox` is the only way any thread other than the I/O thread gets a reply onto the
ROUTER socket: it encodes the reply and queues the frames; then either the producing thread sends
them itself, holding the server's I/O lock (``direct_send``: when the server is nearly idle and
the I/O thread is asleep, so no wake-up sits on the reply's path), or it wakes the I/O thread
through a pipe that the I/O thread's poller watches. Either way one thread at a time uses the socket.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from bridge.codec import Buffer, encode_message
from bridge.protocol import OP_ACT, ErrorCode, ProtocolError, error_header, partial_header, success_header
from models.interfaces import InputError

logger = logging.getLogger(__name__)

ClientKey = tuple[bytes, ...]  # the routing envelope identifies the client


@dataclass(slots=True)
class Work:
    """One admitted request. ``payload`` is an Observation, a GenerationRequest or a session."""

    envelope: list[bytes]  # routing identities, as received
    client: ClientKey
    request_id: int | str
    op: str
    received_s: float  # time.perf_counter() when the I/O thread read it
    deadline_s: float | None  # perf_counter() time after which it must not start
    admitted_bytes: int = 0  # message size counted against server.max_inflight_bytes until answered
    payload: Any = None
    started_s: float = 0.0
    compute_ms: float = 0.0  # generation: accumulated model time for this request
    batch_size: int = 1
    inline_arrays: bool = False  # the request asked for reply arrays inline (no buffer frames)
    batch_key: Hashable = None  # act: the policy's batch key (set by the loop)
    bucket: int = 0  # act: the padded batch size that ran (0: not padded)
    # Set by the I/O thread to ask the loop to end this work (an ErrorCode: cancelled, ...);
    # a single attribute write, read by the loop thread at its next iteration.
    cancel_code: str | None = None
    done: bool = False  # the final reply was queued (loop thread only)

    def expired(self, now_s: float) -> bool:
        return self.deadline_s is not None and now_s > self.deadline_s


@dataclass(frozen=True, slots=True)
class Outgoing:
    client: ClientKey
    frames: list[Buffer]  # envelope + b"" + header + buffers
    final: bool
    admitted_bytes: int = 0  # released from admission when this final reply is taken
    work: Work | None = None  # the request this reply belongs to (None: answered by the I/O thread)


class Outbox:
    """Thread-safe reply queue drained by the I/O thread; ``wake_fd`` becomes readable on put."""

    def __init__(self, frame_threshold_bytes: int) -> None:
        # Two queues: the replies of ``act`` (one message each, a robot waits on it) and the rest
        # (stream chunks, generation and session replies). Each request's messages stay in one
        # queue, so in order; the I/O thread sends control replies ahead of what bulk it holds.
        self._control: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._bulk: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.frame_threshold_bytes = frame_threshold_bytes
        # a wake byte is in the pipe and the I/O thread has not taken it yet: further puts need
        # none (a decode step of 32 streams queued 32 chunks, and wrote the pipe 32 times)
        self._wake_pending = False
        # set by the server: sends what is queued from the calling thread when it can take the
        # socket now (-> True), else False and the I/O thread is woken instead
        self.direct_send: Callable[[], bool] | None = None

    @property
    def wake_fd(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        """Make ``wake_fd`` readable: the I/O thread's poller returns (once until it clears it)."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:  # pipe full: the I/O thread is already awake with work to do
            pass

    def _put(self, work: Work, header: dict[str, Any], final: bool) -> None:
        if work.done:  # exactly one final reply per request: nothing after it (e.g. a cancelled stream)
            return
        frames = encode_message(header, None if work.inline_arrays else self.frame_threshold_bytes)
        if final:
            work.done = True
        out = Outgoing(work.client, [*work.envelope, b"", *frames], final, work.admitted_bytes, work)
        (self._control if work.op == OP_ACT else self._bulk).put(out)
        direct_send = self.direct_send
        if direct_send is None or not direct_send():
            self.wake()

    def clear_wake(self) -> None:
        """Empty the wake pipe (the I/O thread, after its poller saw ``wake_fd`` readable, and
        before it drains the queue). The pipe is read first and the flag cleared after: a wake
        between the two writes nothing (the drain that follows takes its reply), whereas the other
        order could read away a byte written after the flag was cleared and leave the flag set
        with the pipe empty, so that no later reply woke the I/O thread."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False

    def drain(self) -> list[Outgoing]:
        """The queued replies, control first (one thread at a time: the server's I/O lock)."""
        items = self.drain_control()
        self.drain_bulk(items)
        return items

    def drain_control(self) -> list[Outgoing]:
        """The queued ``act`` replies only."""
        q = self._control
        items = []
        while not q.empty():
            items.append(q.get_nowait())
        return items

    def drain_bulk(self, into: list[Outgoing] | deque[Outgoing]) -> None:
        """Append the other queued replies (chunks, generation, sessions) to ``into``, in order."""
        q = self._bulk
        while not q.empty():
            into.append(q.get_nowait())

    def success(self, work: Work, result: Any) -> None:
        now = time.perf_counter()
        timing = {
            "queue_ms": (work.started_s - work.received_s) * 1000.0 if work.started_s else 0.0,
            "compute_ms": work.compute_ms,
            "server_ms": (now - work.received_s) * 1000.0,
            "batch_size": work.batch_size,
        }
        if work.bucket:
            timing["bucket"] = work.bucket
        self._put(work, success_header(work.request_id, result, timing), True)

    def partial(self, work: Work, chunk: str) -> None:
        self._put(work, partial_header(work.request_id, chunk), False)

    def error(self, work: Work, exc: ProtocolError) -> None:
        self._put(work, error_header(work.request_id, exc.code, exc.message), True)

    def fail(self, work: Work, exc: BaseException, what: str) -> None:
        """The one mapping from an exception to an error reply: ProtocolError as it is,
        InputError -> bad_request, anything else -> internal (traceback to the log only)."""
        if isinstance(exc, ProtocolError):
            error = exc
        elif isinstance(exc, InputError):
            error = ProtocolError(ErrorCode.BAD_REQUEST, str(exc))
        else:
            logger.error("%s failed for request %r", what, work.request_id, exc_info=exc)
            error = ProtocolError(ErrorCode.INTERNAL, f"{what} failed")
        self.error(work, error)

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)
