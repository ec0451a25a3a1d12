"""Client-side message building and reply interpretation, shared by the sync and async clients.

Torch-free by design: simulators install only numpy, pyzmq and msgpack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.codec import Buffer, EncodedImage, decode_header, encode_message, sniff_image_format
from bridge.errors import BridgeError, ProtocolViolation
from bridge.protocol import PROTOCOL_VERSION, ProtocolError
from bridge.quoting import quote

# replies come from a trusted server, but keep a bound anyway
_MAX_REPLY_ARRAY_BYTES = 1 << 31
_FLOAT32 = np.dtype(np.float32)


def _float32_array(value: Any) -> np.ndarray:
    """``value`` as a float32 array: as it is when it already is one (the decoded reply's view)."""
    if type(value) is np.ndarray and value.dtype is _FLOAT32:
        return value
    return np.asarray(value, dtype=np.float32)


@dataclass(frozen=True)
class Reply:
    """A final success reply."""

    result: Mapping[str, Any]
    timing: Mapping[str, float]
    round_trip_ms: float


@dataclass(frozen=True)
class Partial:
    """A streamed chunk of a text reply."""

    chunk: str


@dataclass(frozen=True)
class ActResult:
    actions: np.ndarray  # (H, action_dim) float32, physical units
    action: np.ndarray  # (action_dim,) == actions[0]
    timing: Mapping[str, float]
    round_trip_ms: float

    @classmethod
    def from_reply(cls, reply: Reply) -> ActResult:
        actions = _float32_array(reply.result["actions"])
        action = _float32_array(reply.result["action"] if "action" in reply.result else actions[0])
        return cls(actions, action, reply.timing, reply.round_trip_ms)


@dataclass(frozen=True)
class TextResult:
    text: str
    finish_reason: str
    metrics: Mapping[str, Any]
    timing: Mapping[str, float]
    round_trip_ms: float

    @classmethod
    def from_reply(cls, reply: Reply, key: str) -> TextResult:
        r = reply.result
        return cls(
            str(r[key]), str(r.get("finish_reason", "")), r.get("metrics", {}), reply.timing, reply.round_trip_ms
        )


@dataclass(frozen=True)
class RegionResult:
    """``detect`` (objects: x_min, y_min, x_max, y_max) or ``point`` (points: x, y), all in [0, 1]."""

    items: list[dict[str, float]] = field(default_factory=list)
    timing: Mapping[str, float] = field(default_factory=dict)
    round_trip_ms: float = 0.0

    @classmethod
    def from_reply(cls, reply: Reply, key: str) -> RegionResult:
        return cls(list(reply.result[key]), reply.timing, reply.round_trip_ms)


def image_arg(image: Any) -> Any:
    """Accept an (H, W, 3) uint8 array, JPEG/PNG bytes, an EncodedImage or a PIL image."""
    if isinstance(image, (np.ndarray, EncodedImage)):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        fmt = sniff_image_format(data)
        if fmt is None:
            raise ValueError("image bytes are neither JPEG nor PNG")
        return EncodedImage(fmt, data)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image, without importing PIL
        return np.asarray(image.convert("RGB"))
    raise TypeError(f"unsupported image type {type(image).__name__}")


def act_args(
    image: Any = None,
    images: Mapping[str, Any] | None = None,
    instruction: str | None = None,
    tactile: Mapping[str, Any] | None = None,
    proprio: Any = None,
    session: str | None = None,
) -> dict[str, Any]:
    if (image is None) == (images is None):
        raise ValueError("pass exactly one of image= or images=")
    args: dict[str, Any] = {}
    if image is not None:
        args["image"] = image_arg(image)
    else:
        assert images is not None
        args["images"] = {name: image_arg(img) for name, img in images.items()}
    if instruction is not None:
        args["instruction"] = instruction
    if tactile is not None:
        args["tactile"] = {k: (None if v is None else np.asarray(v)) for k, v in tactile.items()}
    if proprio is not None:
        args["proprio"] = np.asarray(proprio, dtype=np.float32)
    if session is not None:
        args["session"] = session
    return args


def settings_args(settings: Mapping[str, Any] | None, **fields: Any) -> dict[str, Any]:
    args = {k: v for k, v in fields.items() if v is not None}
    if settings:
        args["settings"] = dict(settings)
    return args


def build_request(
    request_id: int | str,
    op: str,
    args: Mapping[str, Any] | None,
    deadline_ms: float | None,
    auth: str | None,
    frame_threshold_bytes: int | None,
) -> list[Buffer]:
    """-> the frames after the empty delimiter: [header, buffer_0, ...]."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request_id, "op": op}
    if args:
        header["args"] = args
    if deadline_ms is not None:
        header["deadline_ms"] = float(deadline_ms)
    if auth is not None:
        header["auth"] = auth
    return encode_message(header, frame_threshold_bytes)


def parse_reply(frames: list[Any]) -> tuple[Any, dict[str, Any]]:
    """[b"", header, buffers...] as received by a DEALER -> (id, decoded header)."""
    if len(frames) < 2 or len(frames[0]) != 0:
        raise ProtocolViolation(f"reply without an empty delimiter frame ({len(frames)} frames)")
    buffers = [f.buffer if hasattr(f, "buffer") else f for f in frames[2:]]
    head = frames[1].buffer if hasattr(frames[1], "buffer") else frames[1]
    try:
        header = decode_header(head, buffers, _MAX_REPLY_ARRAY_BYTES)
    except ProtocolError as exc:  # an undecodable reply is one bad reply, reported as a BridgeError
        raise ProtocolViolation(f"undecodable reply: {exc.message}") from exc
    if not isinstance(header, dict) or "id" not in header or "ok" not in header:
        raise ProtocolViolation(f"reply header is not a protocol reply: {quote(header, 200)}")
    return header["id"], header


def interpret(header: Mapping[str, Any], round_trip_ms: float) -> Reply | Partial:
    """A decoded reply header -> Reply or Partial; raises BridgeError for error replies."""
    if not header["ok"]:
        err = header.get("error") or {}
        if not isinstance(err, dict):
            raise ProtocolViolation(f"error reply with a malformed 'error': {quote(err)}")
        raise BridgeError(str(err.get("code", "internal")), str(err.get("message", "")), bool(err.get("retryable")))
    if "partial" in header:
        partial = header["partial"]
        if not isinstance(partial, dict):
            raise ProtocolViolation(f"partial reply with a malformed 'partial': {quote(partial)}")
        return Partial(str(partial.get("chunk", "")))
    result, timing = header.get("result") or {}, header.get("timing") or {}
    if not isinstance(result, dict) or not isinstance(timing, dict):
        raise ProtocolViolation(f"reply with a malformed 'result' or 'timing': {quote(header, 200)}")
    return Reply(result, timing, round_trip_ms)
