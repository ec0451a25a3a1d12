"""asyncio client: one DEALER socket shared by many concurrent requests (pipelined, matched by id).

    client = AsyncBridgeClient("tcp://127.0.0.1:5555")
    results = await asyncio.gather(*(client.act(image=f) for f in frames))
    async for chunk in client.caption_stream(image):
        ...
    await client.close()

A reader task routes each reply to the waiting request by id. When a request times out and
nothing at all arrived from the server since it was sent, the socket is replaced (Lazy Pirate):
pending requests fail with BridgeTimeout and later calls talk to a fresh connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import zmq
import zmq.asyncio

from bridge.codec import DEFAULT_FRAME_THRESHOLD_BYTES
from bridge.errors import BridgeError, BridgeTimeout
from bridge.messages import (
    ActResult,
    Partial,
    RegionResult,
    Reply,
    TextResult,
    act_args,
    build_request,
    image_arg,
    interpret,
    parse_reply,
    settings_args,
)
from bridge.protocol import (
    OP_ACT,
    OP_CAPTION,
    OP_DETECT,
    OP_HEALTH,
    OP_HELLO,
    OP_POINT,
    OP_QUERY,
    OP_RESET,
    OP_STATS,
)

logger = logging.getLogger(__name__)

_Event = Partial | Reply | BridgeError


class _Pending:
    __slots__ = ("events", "op", "sent_at")

    def __init__(self, op: str) -> None:
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.sent_at = time.perf_counter()
        self.op = op


class AsyncBridgeClient:
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout_s: float = 10.0,
        auth: str | None = None,
        frame_threshold_bytes: int | None = DEFAULT_FRAME_THRESHOLD_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.auth = auth
        self.frame_threshold_bytes = frame_threshold_bytes
        self._context = zmq.asyncio.Context()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._last_rx = time.perf_counter()
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def _ensure_connected(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise RuntimeError("client is closed")
        if self._socket is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._socket = sock
            self._reader = asyncio.get_running_loop().create_task(self._read_loop(sock))
        return self._socket

    async def _drop_socket(self, reason: str) -> None:
        sock, reader = self._socket, self._reader
        self._socket, self._reader = None, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # the reader's own end is irrelevant here
                pass
        if sock is not None:
            sock.close(linger=0)
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.events.put_nowait(BridgeTimeout(reason))

    async def close(self) -> None:
        await self._drop_socket("client closed")
        self._closed = True
        self._context.term()

    async def __aenter__(self) -> AsyncBridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ transport

    async def _read_loop(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._last_rx = time.perf_counter()
            try:
                reply_id, header = parse_reply(frames)
            except BridgeError as exc:
                logger.warning("undecodable reply discarded: %s", exc)
                continue
            entry = self._pending.get(reply_id) if isinstance(reply_id, int) else None
            if entry is None:
                logger.debug("discarding reply for unknown id %r", reply_id)
                continue
            try:
                event: _Event = interpret(header, (time.perf_counter() - entry.sent_at) * 1000.0)
            except BridgeError as exc:
                event = exc
            if not isinstance(event, Partial):
                self._pending.pop(reply_id, None)
            entry.events.put_nowait(event)

    async def _exchange(
        self, op: str, args: Mapping[str, Any] | None, deadline_ms: float | None, timeout_s: float | None
    ) -> AsyncGenerator[Partial | Reply, None]:
        sock = self._ensure_connected()
        request_id = next(self._ids)
        frames = build_request(request_id, op, args, deadline_ms, self.auth, self.frame_threshold_bytes)
        entry = _Pending(op)
        self._pending[request_id] = entry
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            await sock.send_multipart([b"", *frames], copy=False)
            while True:
                try:
                    event = await asyncio.wait_for(entry.events.get(), timeout_s)
                except asyncio.TimeoutError:
                    self._pending.pop(request_id, None)
                    message = f"no reply to {op!r} from {self.endpoint} within {timeout_s:.3g} s"
                    if self._last_rx < entry.sent_at and self._socket is sock:
                        await self._drop_socket(message)  # the server said nothing at all: reconnect
                    raise BridgeTimeout(message) from None
                if isinstance(event, BridgeError):
                    raise event
                yield event
                if isinstance(event, Reply):
                    return
        finally:
            self._pending.pop(request_id, None)

    async def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        final: Reply | None = None
        async for event in self._exchange(op, args, deadline_ms, timeout_s):
            if isinstance(event, Reply):
                final = event
        assert final is not None
        return final

    def stream(
        self, op: str, args: Mapping[str, Any], *, deadline_ms: float | None = None, timeout_s: float | None = None
    ) -> AsyncGenerator[Partial | Reply, None]:
        """Partial chunks, then the final Reply, of a streaming op (``aclose()`` it to abandon)."""
        return self._exchange(op, {**args, "stream": True}, deadline_ms, timeout_s)

    # ------------------------------------------------------------------ ops

    async def hello(self) -> Mapping[str, Any]:
        return (await self.call(OP_HELLO)).result

    async def health(self, timeout_s: float | None = None) -> Mapping[str, Any]:
        return (await self.call(OP_HEALTH, timeout_s=timeout_s)).result

    async def stats(self) -> Mapping[str, Any]:
        return (await self.call(OP_STATS)).result

    async def reset(self, session: str | None = None) -> None:
        await self.call(OP_RESET, {"session": session} if session is not None else None)

    async def act(
        self,
        image: Any = None,
        *,
        images: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        tactile: Mapping[str, Any] | None = None,
        proprio: Any = None,
        session: str | None = None,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> ActResult:
        args = act_args(image, images, instruction, tactile, proprio, session)
        return ActResult.from_reply(await self.call(OP_ACT, args, deadline_ms=deadline_ms, timeout_s=timeout_s))

    async def caption(
        self, image: Any, length: str = "normal", *, settings: Mapping[str, Any] | None = None
    ) -> TextResult:
        args = {"image": image_arg(image), **settings_args(settings, length=length)}
        return TextResult.from_reply(await self.call(OP_CAPTION, args), "caption")

    async def query(self, image: Any, question: str, *, settings: Mapping[str, Any] | None = None) -> TextResult:
        args = {"image": image_arg(image), **settings_args(settings, question=question)}
        return TextResult.from_reply(await self.call(OP_QUERY, args), "answer")

    async def caption_stream(
        self, image: Any, length: str = "normal", *, settings: Mapping[str, Any] | None = None
    ) -> AsyncIterator[str]:
        args = {"image": image_arg(image), **settings_args(settings, length=length)}
        async for event in self.stream(OP_CAPTION, args):
            if isinstance(event, Partial):
                yield event.chunk

    async def query_stream(
        self, image: Any, question: str, *, settings: Mapping[str, Any] | None = None
    ) -> AsyncIterator[str]:
        args = {"image": image_arg(image), **settings_args(settings, question=question)}
        async for event in self.stream(OP_QUERY, args):
            if isinstance(event, Partial):
                yield event.chunk

    async def detect(self, image: Any, object: str, *, settings: Mapping[str, Any] | None = None) -> RegionResult:
        reply = await self.call(OP_DETECT, {"image": image_arg(image), **settings_args(settings, object=object)})
        return RegionResult.from_reply(reply, "objects")

    async def point(self, image: Any, object: str, *, settings: Mapping[str, Any] | None = None) -> RegionResult:
        reply = await self.call(OP_POINT, {"image": image_arg(image), **settings_args(settings, object=object)})
        return RegionResult.from_reply(reply, "points")
