"""The client op surface, defined once: each op's arguments, and how its reply is read.

:class:`OpSurface` holds one method per protocol op (``hello`` … ``point``, ``cancel``). Each
method builds an :class:`OpCall` — the op, its arguments and the function that turns the final
:class:`~bridge.messages.Reply` into the result — and hands it to the transport the concrete
client implements:

- :class:`bridge.client.BridgeClient` runs calls synchronously: ``client.act(...)`` returns an
  :class:`ActResult`, ``client.caption(img, stream=True)`` a :class:`bridge.client.TextStream`;
- :class:`bridge.aio_client.AsyncBridgeClient` runs them on asyncio: ``await client.act(...)``,
  ``async for chunk in client.caption(img, stream=True)``.

So both clients have the same method names and keywords, and streams work the same way.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.messages import (
    ActResult,
    RegionResult,
    Reply,
    TextResult,
    act_args,
    image_arg,
    settings_args,
)
from bridge.protocol import (
    OP_ACT,
    OP_CANCEL,
    OP_CAPTION,
    OP_DETECT,
    OP_HEALTH,
    OP_HELLO,
    OP_POINT,
    OP_QUERY,
    OP_RESET,
    OP_STATS,
)


def _result(reply: Reply) -> Mapping[str, Any]:
    return reply.result


def _nothing(reply: Reply) -> None:
    return None


@dataclass(frozen=True)
class OpCall:
    """One request as the client will send it, and how to read its final reply."""

    op: str
    args: Mapping[str, Any] | None
    parse: Callable[[Reply], Any]
    deadline_ms: float | None = None
    timeout_s: float | None = None
    text_key: str | None = None  # the result key of a streamable text op ("caption", "answer")

    def streaming(self) -> OpCall:
        if self.text_key is None:
            raise ValueError(f"op {self.op!r} does not stream")
        return OpCall(
            self.op, {**(self.args or {}), "stream": True}, self.parse, self.deadline_ms, self.timeout_s, self.text_key
        )


def _region(key: str) -> Callable[[Reply], RegionResult]:
    return lambda reply: RegionResult.from_reply(reply, key)


def _text(key: str) -> Callable[[Reply], TextResult]:
    return lambda reply: TextResult.from_reply(reply, key)


class OpSurface:
    """Every op of the protocol, once. Subclasses implement ``_run`` and ``_run_stream``.

    ``_run(call)`` returns the parsed result (sync) or an awaitable of it (async);
    ``_run_stream(call)`` returns an iterator (sync) or async iterator (async) of text chunks.
    """

    def _run(self, call: OpCall) -> Any:
        raise NotImplementedError

    def _run_stream(self, call: OpCall) -> Any:
        raise NotImplementedError

    def _run_text(self, call: OpCall, stream: bool) -> Any:
        return self._run_stream(call.streaming()) if stream else self._run(call)

    # ------------------------------------------------------------------ control ops

    def hello(self, *, timeout_s: float | None = None) -> Any:
        """-> the server's ``hello`` result (ops, models, limits, auth)."""
        return self._run(OpCall(OP_HELLO, None, _result, timeout_s=timeout_s))

    def health(self, *, timeout_s: float | None = None) -> Any:
        return self._run(OpCall(OP_HEALTH, None, _result, timeout_s=timeout_s))

    def stats(self, *, timeout_s: float | None = None) -> Any:
        return self._run(OpCall(OP_STATS, None, _result, timeout_s=timeout_s))

    def reset(self, session: str | None = None, *, timeout_s: float | None = None) -> Any:
        args = {"session": session} if session is not None else None
        return self._run(OpCall(OP_RESET, args, _nothing, timeout_s=timeout_s))

    def cancel(self, request_id: int | str, *, timeout_s: float | None = None) -> Any:
        """Cancel an earlier request of this client -> ``{"cancelled": bool}``."""
        return self._run(OpCall(OP_CANCEL, {"id": request_id}, _result, timeout_s=timeout_s))

    # ------------------------------------------------------------------ model ops

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
    ) -> Any:
        """One control step -> :class:`ActResult` (``actions`` (H, 7), ``action`` (7,), physical units)."""
        args = act_args(image, images, instruction, tactile, proprio, session)
        return self._run(OpCall(OP_ACT, args, ActResult.from_reply, deadline_ms, timeout_s))

    def caption(
        self,
        image: Any,
        length: str = "normal",
        *,
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """-> :class:`TextResult`, or with ``stream=True`` a stream of text chunks."""
        args = {"image": image_arg(image), **settings_args(settings, length=length)}
        return self._run_text(OpCall(OP_CAPTION, args, _text("caption"), deadline_ms, timeout_s, "caption"), stream)

    def query(
        self,
        image: Any,
        question: str,
        *,
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """-> :class:`TextResult`, or with ``stream=True`` a stream of text chunks."""
        args = {"image": image_arg(image), **settings_args(settings, question=question)}
        return self._run_text(OpCall(OP_QUERY, args, _text("answer"), deadline_ms, timeout_s, "answer"), stream)

    def detect(
        self,
        image: Any,
        object: str,
        *,
        settings: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """-> :class:`RegionResult` with ``items`` = boxes ``{x_min, y_min, x_max, y_max}`` in [0, 1]."""
        args = {"image": image_arg(image), **settings_args(settings, object=object)}
        return self._run(OpCall(OP_DETECT, args, _region("objects"), deadline_ms, timeout_s))

    def point(
        self,
        image: Any,
        object: str,
        *,
        settings: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """-> :class:`RegionResult` with ``items`` = points ``{x, y}`` in [0, 1]."""
        args = {"image": image_arg(image), **settings_args(settings, object=object)}
        return self._run(OpCall(OP_POINT, args, _region("points"), deadline_ms, timeout_s))
