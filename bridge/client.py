"""Synchronous client: one DEALER socket, request ids, a timeout on every receive.

    from bridge.client import BridgeClient
    with BridgeClient("tcp://127.0.0.1:5555") as client:
        result = client.act(image=frame_hwc_uint8, instruction="pick up the red cube")
        dx, dy, dz = result.action[:3]

After a timeout the socket is closed and a fresh one connects (the Lazy Pirate pattern), so a
restarted server is picked up by the next call; replies to earlier requests are discarded by id.
Importing this module never imports torch.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import zmq

from bridge.codec import DEFAULT_FRAME_THRESHOLD_BYTES
from bridge.errors import BridgeTimeout
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

__all__ = ["ActResult", "BridgeClient", "RegionResult", "Reply", "TextResult", "TextStream"]


class TextStream:
    """Iterates over streamed text chunks; ``result`` holds the final TextResult afterwards."""

    def __init__(self, events: Iterator[Partial | Reply], key: str) -> None:
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


class BridgeClient:
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout_s: float = 10.0,
        auth: str | None = None,
        frame_threshold_bytes: int | None = DEFAULT_FRAME_THRESHOLD_BYTES,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.auth = auth
        self.frame_threshold_bytes = frame_threshold_bytes
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._ids = itertools.count(1)
        self._socket = self._connect()

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> zmq.Socket[Any]:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def _reset_socket(self) -> None:
        self._socket.close(linger=0)
        self._socket = self._connect()

    def close(self) -> None:
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
    ) -> Iterator[Partial | Reply]:
        request_id = next(self._ids)
        frames = build_request(request_id, op, args, deadline_ms, self.auth, self.frame_threshold_bytes)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        start = time.perf_counter()
        self._socket.send_multipart([b"", *frames], copy=False)
        deadline = start + timeout_s
        while True:
            remaining_ms = (deadline - time.perf_counter()) * 1000.0
            if remaining_ms <= 0 or not self._socket.poll(max(1, int(remaining_ms)), zmq.POLLIN):
                self._reset_socket()
                raise BridgeTimeout(f"no reply to {op!r} from {self.endpoint} within {timeout_s:.3g} s")
            reply_id, header = parse_reply(self._socket.recv_multipart(copy=False))
            if reply_id != request_id:
                logger.debug("discarding stale reply id=%r (waiting for %r)", reply_id, request_id)
                continue
            event = interpret(header, (time.perf_counter() - start) * 1000.0)
            yield event
            if isinstance(event, Reply):
                return
            deadline = time.perf_counter() + timeout_s  # a chunk arrived: the server is alive

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and wait for its final reply; raises BridgeError on error replies."""
        final: Reply | None = None
        for event in self._exchange(op, args, deadline_ms, timeout_s):
            if isinstance(event, Reply):
                final = event
        assert final is not None
        return final

    def stream(
        self, op: str, args: Mapping[str, Any], *, deadline_ms: float | None = None, timeout_s: float | None = None
    ) -> Iterator[Partial | Reply]:
        return self._exchange(op, {**args, "stream": True}, deadline_ms, timeout_s)

    # ------------------------------------------------------------------ ops

    def hello(self) -> Mapping[str, Any]:
        return self.call(OP_HELLO).result

    def health(self, timeout_s: float | None = None) -> Mapping[str, Any]:
        return self.call(OP_HEALTH, timeout_s=timeout_s).result

    def stats(self) -> Mapping[str, Any]:
        return self.call(OP_STATS).result

    def reset(self, session: str | None = None) -> None:
        self.call(OP_RESET, {"session": session} if session is not None else None)

    def act(
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
        return ActResult.from_reply(self.call(OP_ACT, args, deadline_ms=deadline_ms, timeout_s=timeout_s))

    def caption(
        self,
        image: Any,
        length: str = "normal",
        *,
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> TextResult | TextStream:
        args = {"image": image_arg(image), **settings_args(settings, length=length)}
        return self._text(OP_CAPTION, args, "caption", stream, timeout_s)

    def query(
        self,
        image: Any,
        question: str,
        *,
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> TextResult | TextStream:
        args = {"image": image_arg(image), **settings_args(settings, question=question)}
        return self._text(OP_QUERY, args, "answer", stream, timeout_s)

    def detect(
        self, image: Any, object: str, *, settings: Mapping[str, Any] | None = None, timeout_s: float | None = None
    ) -> RegionResult:
        reply = self.call(
            OP_DETECT, {"image": image_arg(image), **settings_args(settings, object=object)}, timeout_s=timeout_s
        )
        return RegionResult.from_reply(reply, "objects")

    def point(
        self, image: Any, object: str, *, settings: Mapping[str, Any] | None = None, timeout_s: float | None = None
    ) -> RegionResult:
        reply = self.call(
            OP_POINT, {"image": image_arg(image), **settings_args(settings, object=object)}, timeout_s=timeout_s
        )
        return RegionResult.from_reply(reply, "points")

    def _text(
        self, op: str, args: dict[str, Any], key: str, stream: bool, timeout_s: float | None
    ) -> TextResult | TextStream:
        if stream:
            return TextStream(self.stream(op, args, timeout_s=timeout_s), key)
        return TextResult.from_reply(self.call(op, args, timeout_s=timeout_s), key)
