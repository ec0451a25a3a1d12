"""Synchronous client: one DEALER socket, request ids, a timeout on every receive.

    from bridge.client import BridgeClient
    with BridgeClient("tcp://127.0.0.1:5555") as client:
        result = client.act(image=frame_hwc_uint8, instruction="pick up the red cube")
        dx, dy, dz = result.action[:3]

After a timeout the socket is closed and a fresh one connects (the Lazy Pirate pattern), so a
restarted server is picked up by the next call; replies to earlier requests are discarded by id.

Several servers: ``BridgeClient(["tcp://a:5555", "tcp://b:5556"])`` (or ``"tcp://a:5555,tcp://b:5556"``)
spreads requests over the healthy ones, fails over and keeps sessions on one server
(:mod:`bridge.endpoints`).
Importing this module never imports torch.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import zmq

from bridge.codec import DEFAULT_FRAME_THRESHOLD_BYTES, SEND_COPY_MAX_BYTES
from bridge.curve_keys import CurveClientKeys
from bridge.endpoints import EndpointRouter, PoolPolicy, endpoint_list
from bridge.errors import BridgeTimeout
from bridge.messages import (
    ActResult,
    Partial,
    RegionResult,
    Reply,
    TextResult,
    build_request,
    interpret,
    parse_reply,
)
from bridge.ops import OpCall, OpSurface
from bridge.protocol import OP_CANCEL
from bridge.socket_frames import NOBLOCK, recv_frames, send_frames, wait_readable

logger = logging.getLogger(__name__)

__all__ = ["ActResult", "BridgeClient", "RegionResult", "Reply", "TextResult", "TextStream"]


class TextStream:
    """Iterates over streamed text chunks; ``result`` holds the final TextResult afterwards.

    ``close()`` (or leaving a ``with`` block) before the end abandons the request: the client
    sends ``cancel`` so that the server frees the sequence's slot at its next step.
    """

    def __init__(self, events: Generator[Partial | Reply, None, None], key: str) -> None:
        self._events = events
        self._key = key
        self.result: TextResult | None = None

    def __iter__(self) -> Iterator[str]:
        for event in self._events:
            if isinstance(event, Partial):
                yield event.chunk
            else:
                self.result = TextResult.from_reply(event, self._key)

    def text(self) -> str:
        """Consume the stream; the full text."""
        return "".join(self)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BridgeClient(OpSurface):
    """The synchronous client; its op methods (``act``, ``caption``, …) are defined in :class:`OpSurface`."""

    def __init__(
        self,
        endpoint: str | Sequence[str] = "tcp://127.0.0.1:5555",
        *,
        timeout_s: float = 10.0,
        auth: str | None = None,
        frame_threshold_bytes: int | None = DEFAULT_FRAME_THRESHOLD_BYTES,
        context: zmq.Context[Any] | None = None,
        curve: CurveClientKeys | None = None,
        pool_policy: PoolPolicy = PoolPolicy(),
    ) -> None:
        self.endpoints = endpoint_list(endpoint)
        self.endpoint = self.endpoints[0] if len(self.endpoints) == 1 else ",".join(self.endpoints)
        self.curve = curve  # CURVE keys when the server encrypts (hello.auth == "curve")
        self.timeout_s = timeout_s
        self.auth = auth
        self.frame_threshold_bytes = frame_threshold_bytes
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._ids = itertools.count(1)
        self._router: EndpointRouter[BridgeClient] | None = None
        if len(self.endpoints) == 1:
            self._socket = self._connect()
        else:  # one link (a single-endpoint client) per server; ids shared so that cancel finds its request
            links = {ep: self._link(ep) for ep in self.endpoints}
            for link in links.values():
                link._ids = self._ids
            self._router = EndpointRouter(links, self._link, pool_policy)

    def _link(self, endpoint: str) -> BridgeClient:
        return BridgeClient(endpoint, timeout_s=self.timeout_s, auth=self.auth,
                            frame_threshold_bytes=self.frame_threshold_bytes, context=self._context, curve=self.curve)

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> zmq.Socket[Any]:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.copy_threshold = SEND_COPY_MAX_BYTES
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        return sock

    def _reset_socket(self) -> None:
        self._socket.close(linger=0)
        self._socket = self._connect()

    def close(self) -> None:
        if self._router is not None:
            self._router.close()
            for link in self._router.links.values():
                link.close()
        else:
            self._socket.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _exchange(
        self, op: str, args: Mapping[str, Any] | None, deadline_ms: float | None, timeout_s: float | None
    ) -> Generator[Partial | Reply, None, None]:
        request_id = next(self._ids)
        frames = build_request(request_id, op, args, deadline_ms, self.auth, self.frame_threshold_bytes)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        start = time.perf_counter()
        send_frames(self._socket, [b"", *frames])
        deadline = start + timeout_s
        finished = False
        try:
            while True:
                remaining_ms = (deadline - time.perf_counter()) * 1000.0
                if remaining_ms <= 0 or not wait_readable(self._socket, max(1, int(remaining_ms))):
                    self._send_cancel(request_id)  # the server may be alive but slow: free its work
                    finished = True
                    self._reset_socket()
                    raise BridgeTimeout(f"no reply to {op!r} from {self.endpoint} within {timeout_s:.3g} s")
                reply_id, header = parse_reply(recv_frames(self._socket, NOBLOCK))
                if reply_id != request_id:
                    logger.debug("discarding stale reply id=%r (waiting for %r)", reply_id, request_id)
                    continue
                try:
                    event = interpret(header, (time.perf_counter() - start) * 1000.0)
                except BaseException:
                    finished = True  # an error reply is final
                    raise
                if isinstance(event, Reply):
                    finished = True
                yield event
                if finished:
                    return
                deadline = time.perf_counter() + timeout_s  # a chunk arrived: the server is alive
        finally:
            if not finished:  # abandoned by the caller (stream closed early)
                self._send_cancel(request_id)

    def _send_cancel(self, request_id: int) -> None:
        """Fire-and-forget ``cancel`` of ``request_id``; its reply is discarded as a stale id."""
        frames = build_request(next(self._ids), OP_CANCEL, {"id": request_id}, None, self.auth, None)
        try:
            send_frames(self._socket, [b"", *frames], NOBLOCK)
        except zmq.ZMQError as exc:
            logger.debug("could not send cancel for %r: %s", request_id, exc)

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and wait for its final reply; raises BridgeError on error replies."""
        if self._router is not None:
            return self._router.run(op, args, lambda link: link.call(op, args, deadline_ms=deadline_ms,
                                                                      timeout_s=timeout_s))
        final: Reply | None = None
        for event in self._exchange(op, args, deadline_ms, timeout_s):
            if isinstance(event, Reply):
                final = event
        assert final is not None
        return final

    def stream(
        self, op: str, args: Mapping[str, Any], *, deadline_ms: float | None = None, timeout_s: float | None = None
    ) -> Generator[Partial | Reply, None, None]:
        """Partial chunks, then the final Reply, of a streaming op (``close()`` it to abandon)."""
        return self._events(op, {**args, "stream": True}, deadline_ms, timeout_s)

    def _events(
        self, op: str, args: Mapping[str, Any] | None, deadline_ms: float | None, timeout_s: float | None
    ) -> Generator[Partial | Reply, None, None]:
        if self._router is not None:
            return self._router.stream(args, lambda link: link._exchange(op, args, deadline_ms, timeout_s))
        return self._exchange(op, args, deadline_ms, timeout_s)

    # ------------------------------------------------------------------ the op surface's transport

    def _run(self, call: OpCall) -> Any:
        if self._router is not None and call.op == OP_CANCEL:  # the request may be on any server
            replies = self._router.broadcast(lambda link: link._run(call))
            return {"cancelled": any(bool(r.get("cancelled")) for r in replies)}
        return call.parse(self.call(call.op, call.args, deadline_ms=call.deadline_ms, timeout_s=call.timeout_s))

    def _run_stream(self, call: OpCall) -> TextStream:
        assert call.text_key is not None
        events = self._events(call.op, call.args, call.deadline_ms, call.timeout_s)
        return TextStream(events, call.text_key)
