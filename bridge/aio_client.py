"""asyncio client: one DEALER socket shared by many concurrent requests (pipelined, matched by id).

    client = AsyncBridgeClient("tcp://127.0.0.1:5555")
    results = await asyncio.gather(*(client.act(image=f) for f in frames))
    async for chunk in client.caption(image, stream=True):
        ...
    await client.close()

The op methods are the same as :class:`bridge.client.BridgeClient`'s (both come from
:class:`bridge.ops.OpSurface`); here they return awaitables, and streams are async iterators.

A reader task routes each reply to the waiting request by id. When a request times out and
nothing at all arrived from the server since it was sent, the socket is replaced (Lazy Pirate):
pending requests fail with BridgeTimeout and later calls talk to a fresh connection.

Several servers: ``AsyncBridgeClient(["tcp://a:5555", "tcp://b:5556"])`` sends each request to the
healthy server with the fewest in flight, fails over and keeps sessions on one server
(:mod:`bridge.endpoints`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import zmq
import zmq.asyncio

from bridge.codec import DEFAULT_FRAME_THRESHOLD_BYTES, SEND_COPY_MAX_BYTES
from bridge.curve_keys import CurveClientKeys
from bridge.endpoints import AsyncEndpointRouter, PoolPolicy, endpoint_list
from bridge.errors import BridgeError, BridgeTimeout
from bridge.messages import (
    Partial,
    Reply,
    TextResult,
    build_request,
    interpret,
    parse_reply,
)
from bridge.ops import OpCall, OpSurface
from bridge.protocol import OP_CANCEL

logger = logging.getLogger(__name__)

_Event = Partial | Reply | BridgeError


class AsyncTextStream:
    """Async iterator over streamed text chunks; ``result`` holds the final TextResult afterwards.

    ``await aclose()`` (or leaving an ``async with`` block) before the end abandons the request:
    the client sends ``cancel`` so that the server frees the sequence's slot at its next step.
    """

    def __init__(self, events: AsyncGenerator[Partial | Reply, None], key: str) -> None:
        self._events = events
        self._key = key
        self.result: TextResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        async for event in self._events:
            if isinstance(event, Partial):
                yield event.chunk
            else:
                self.result = TextResult.from_reply(event, self._key)

    async def text(self) -> str:
        """Consume the stream; the full text."""
        return "".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Pending:
    __slots__ = ("events", "op", "sent_at")

    def __init__(self, op: str) -> None:
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.sent_at = time.perf_counter()
        self.op = op


class AsyncBridgeClient(OpSurface):
    """The asyncio client; its op methods (``act``, ``caption``, …) are defined in :class:`OpSurface`."""

    def __init__(
        self,
        endpoint: str | Sequence[str] = "tcp://127.0.0.1:5555",
        *,
        timeout_s: float = 10.0,
        auth: str | None = None,
        frame_threshold_bytes: int | None = DEFAULT_FRAME_THRESHOLD_BYTES,
        context: zmq.asyncio.Context | None = None,
        routing_id: bytes | None = None,
        curve: CurveClientKeys | None = None,
        pool_policy: PoolPolicy = PoolPolicy(),
    ) -> None:
        """``context``: share one ZeroMQ context (one I/O thread) among many clients; the caller
        then terms it. By default each client has its own."""
        self.endpoints = endpoint_list(endpoint)
        self.endpoint = self.endpoints[0] if len(self.endpoints) == 1 else ",".join(self.endpoints)
        self.curve = curve  # CURVE keys when the server encrypts (hello.auth == "curve")
        self.routing_id = routing_id  # the identity the server's admission sees (None: ZeroMQ assigns one)
        self.timeout_s = timeout_s
        self.auth = auth
        self.frame_threshold_bytes = frame_threshold_bytes
        self._own_context = context is None
        self._context = context if context is not None else zmq.asyncio.Context()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._last_rx = time.perf_counter()
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # set on the links of a multi-endpoint client: a lost connection fails what is pending at once
        # (the pool retries it elsewhere) instead of after timeout_s
        self.watch_disconnects = False
        self._closed = False
        self._router: AsyncEndpointRouter[AsyncBridgeClient] | None = None
        if len(self.endpoints) > 1:  # one link per server; ids shared so that cancel finds its request
            links = {ep: self._link(ep) for ep in self.endpoints}
            for link in links.values():
                link._ids = self._ids
            self._router = AsyncEndpointRouter(links, pool_policy)

    def _link(self, endpoint: str) -> AsyncBridgeClient:
        link = AsyncBridgeClient(endpoint, timeout_s=self.timeout_s, auth=self.auth,
                                 frame_threshold_bytes=self.frame_threshold_bytes, context=self._context,
                                 routing_id=self.routing_id, curve=self.curve)
        link.watch_disconnects = True
        return link

    # ------------------------------------------------------------------ lifecycle

    def _ensure_connected(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise RuntimeError("client is closed")
        if self._socket is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.copy_threshold = SEND_COPY_MAX_BYTES
            if self.routing_id is not None:
                sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
            if self.curve is not None:
                self.curve.apply(sock)
            sock.connect(self.endpoint)
            self._socket = sock
            self._reader = asyncio.get_running_loop().create_task(self._read_loop(sock))
            if self.watch_disconnects:
                self._watcher = asyncio.get_running_loop().create_task(self._watch(sock))
        return self._socket

    async def _watch(self, sock: zmq.asyncio.Socket) -> None:
        """A dropped TCP connection (the server process died) fails the pending requests now."""
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            await monitor.recv_multipart()
            if self._socket is sock:
                await self._drop_socket(f"connection to {self.endpoint} lost")
        finally:
            monitor.close(linger=0)

    async def _drop_socket(self, reason: str) -> None:
        sock, reader, watcher = self._socket, self._reader, self._watcher
        self._socket, self._reader, self._watcher = None, None, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
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
        if self._router is not None:
            await self._router.close()
            for link in self._router.links.values():
                await link.close()
        await self._drop_socket("client closed")
        self._closed = True
        if self._own_context:
            self._context.term()

    async def __aenter__(self) -> AsyncBridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        if self._router is not None:
            return sum(link.in_flight for link in self._router.links.values())
        return len(self._pending)

    # ------------------------------------------------------------------ transport

    async def _read_loop(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._last_rx = time.perf_counter()
            try:
                reply_id, header = parse_reply(frames)
            except BridgeError as exc:  # one bad reply must not kill the reader: later calls go on
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
        finished = False
        try:
            await sock.send_multipart([b"", *frames], copy=False)
            while True:
                try:
                    event = await asyncio.wait_for(entry.events.get(), timeout_s)
                except asyncio.TimeoutError:
                    self._pending.pop(request_id, None)
                    finished = True
                    await self._send_cancel(sock, request_id)  # the server may be alive but slow
                    message = f"no reply to {op!r} from {self.endpoint} within {timeout_s:.3g} s"
                    if self._last_rx < entry.sent_at and self._socket is sock:
                        await self._drop_socket(message)  # the server said nothing at all: reconnect
                    raise BridgeTimeout(message) from None
                if isinstance(event, BridgeError):
                    finished = True
                    raise event
                if isinstance(event, Reply):
                    finished = True
                yield event
                if finished:
                    return
        finally:
            self._pending.pop(request_id, None)
            if not finished and self._socket is sock:  # abandoned by the caller (stream closed early)
                await self._send_cancel(sock, request_id)

    async def _send_cancel(self, sock: zmq.asyncio.Socket, request_id: int) -> None:
        """Fire-and-forget ``cancel`` of ``request_id``; its reply is discarded (unknown id)."""
        frames = build_request(next(self._ids), OP_CANCEL, {"id": request_id}, None, self.auth, None)
        try:
            await sock.send_multipart([b"", *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.debug("could not send cancel for %r: %s", request_id, exc)

    async def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        if self._router is not None:
            return await self._router.run(op, args, lambda link: link.call(op, args, deadline_ms=deadline_ms,
                                                                            timeout_s=timeout_s))
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
        return self._events(op, {**args, "stream": True}, deadline_ms, timeout_s)

    def _events(
        self, op: str, args: Mapping[str, Any] | None, deadline_ms: float | None, timeout_s: float | None
    ) -> AsyncGenerator[Partial | Reply, None]:
        if self._router is not None:
            return self._router.stream(args, lambda link: link._exchange(op, args, deadline_ms, timeout_s))
        return self._exchange(op, args, deadline_ms, timeout_s)

    # ------------------------------------------------------------------ the op surface's transport

    async def _run(self, call: OpCall) -> Any:
        if self._router is not None and call.op == OP_CANCEL:  # the request may be on any server
            replies = await self._router.broadcast(lambda link: link._run(call))
            return {"cancelled": any(bool(r.get("cancelled")) for r in replies)}
        reply = await self.call(call.op, call.args, deadline_ms=call.deadline_ms, timeout_s=call.timeout_s)
        return call.parse(reply)

    def _run_stream(self, call: OpCall) -> AsyncTextStream:
        assert call.text_key is not None
        return AsyncTextStream(self._events(call.op, call.args, call.deadline_ms, call.timeout_s), call.text_key)
