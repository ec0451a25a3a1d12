"""Wire protocol v1 constants: the one place that names versions, ops, keys and error codes.

The contract itself is docs/protocol.md (protocol v1 and its compatible extensions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)

# ops
OP_HELLO: Final = "hello"
OP_HEALTH: Final = "health"
OP_STATS: Final = "stats"
OP_ACT: Final = "act"
OP_RESET: Final = "reset"
OP_CAPTION: Final = "caption"
OP_QUERY: Final = "query"
OP_DETECT: Final = "detect"
OP_POINT: Final = "point"
OP_CANCEL: Final = "cancel"  # compatible extension (round 2): end an earlier request of the same client
CONTROL_OPS: Final = (OP_HELLO, OP_HEALTH, OP_STATS, OP_RESET)
GENERATION_OPS: Final = (OP_CAPTION, OP_QUERY, OP_DETECT, OP_POINT)
STREAMING_OPS: Final = (OP_CAPTION, OP_QUERY)
ALL_OPS: Final = (*CONTROL_OPS, OP_ACT, *GENERATION_OPS)

CAPTION_LENGTHS: Final = ("short", "normal", "long")


@dataclass(frozen=True)
class SettingRange:
    """Bounds of one generation setting (``args.settings.<key>``); the server checks them
    (bridge/parsing.py), the HTTP companion checks and documents the same ones."""

    low: float
    high: float
    integer: bool = False
    low_exclusive: bool = False  # True: ``low < v`` (else ``low <= v``)

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_exclusive else value >= self.low
        return above and value <= self.high


SETTING_RANGES: Final[Mapping[str, SettingRange]] = MappingProxyType({
    "temperature": SettingRange(0.0, 100.0),
    "top_p": SettingRange(0.0, 1.0, low_exclusive=True),
    "max_tokens": SettingRange(1, 65536, integer=True),
    "max_objects": SettingRange(1, 1000, integer=True),
})
ACT_ARGS: Final = ("image", "images", "instruction", "tactile", "proprio", "session")  # others: bad_request

# compatible extension: a request header key asking for every reply array inline (no buffer frames),
# for decoders that know only inline ``data`` (openpi-client's msgpack_numpy)
INLINE_ARRAYS_KEY: Final = "inline_arrays"

# value markers (decoders accept them as str or bin; this project's encoders write bin)
NDARRAY_KEY: Final = "__ndarray__"
NPGENERIC_KEY: Final = "__npgeneric__"  # openpi-client's numpy scalar form, accepted on input
IMAGE_KEY: Final = "__image__"
IMAGE_FORMATS: Final = ("jpeg", "png")


class ErrorCode:
    BAD_REQUEST: Final = "bad_request"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    UNKNOWN_OP: Final = "unknown_op"
    UNAUTHORIZED: Final = "unauthorized"
    PAYLOAD_TOO_LARGE: Final = "payload_too_large"
    OVERLOADED: Final = "overloaded"
    DEADLINE_EXCEEDED: Final = "deadline_exceeded"
    MODEL_UNAVAILABLE: Final = "model_unavailable"
    INTERNAL: Final = "internal"
    CANCELLED: Final = "cancelled"  # compatible extension (round 2)


# code -> retryable, exactly as the protocol's table says
RETRYABLE: Final[Mapping[str, bool]] = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: False,
        ErrorCode.UNSUPPORTED_VERSION: False,
        ErrorCode.UNKNOWN_OP: False,
        ErrorCode.UNAUTHORIZED: False,
        ErrorCode.PAYLOAD_TOO_LARGE: False,
        ErrorCode.OVERLOADED: True,
        ErrorCode.DEADLINE_EXCEEDED: True,
        ErrorCode.MODEL_UNAVAILABLE: True,
        ErrorCode.INTERNAL: True,
        ErrorCode.CANCELLED: False,
    }
)

class ProtocolError(Exception):
    """A request the server answers with an error reply (raised while handling it)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in RETRYABLE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return RETRYABLE[self.code]


MAX_ERROR_MESSAGE_CHARS: Final = 1000  # error messages quote excerpts; this caps any message


def error_header(request_id: object, code: str, message: str) -> dict[str, object]:
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": {"code": code, "message": message, "retryable": RETRYABLE[code]},
    }


def success_header(request_id: object, result: object, timing: Mapping[str, float]) -> dict[str, object]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result, "timing": dict(timing)}


def partial_header(request_id: object, chunk: str) -> dict[str, object]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "partial": {"chunk": chunk}}
