"""Validation of decoded request headers and op arguments into typed work payloads.

Every rejection is a ProtocolError whose message names the field and says expected vs got.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.image_args import ImageLimits, check_image_size, image_from_arg
from bridge.protocol import (
    ACT_ARGS,
    CAPTION_LENGTHS,
    INLINE_ARRAYS_KEY,
    OP_CAPTION,
    OP_QUERY,
    SETTING_RANGES,
    STREAMING_OPS,
    SUPPORTED_VERSIONS,
    ErrorCode,
    ProtocolError,
)
from bridge.quoting import quote
from models.interfaces import GenerationRequest, GenerationSettings, Observation
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

_MAX_ID_CHARS = 256
_MAX_SESSION_CHARS = 256
_MAX_CAMERAS = 16
_MAX_PROPRIO = 4096
_MAX_TEXT_CHARS = 4096
_ACT_ARG_NAMES = frozenset(ACT_ARGS)


@dataclass(frozen=True)
class RequestHead:
    request_id: int | str
    op: str
    args: Mapping[str, Any]
    deadline_ms: float | None
    inline_arrays: bool = False  # compatible extension: reply arrays inline (openpi's decoder), no frames


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


def readable_id(header: Any) -> int | str | None:
    """The request id, when the header carries a valid one (used even for error replies)."""
    if isinstance(header, dict):
        rid = header.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and -(2**63) <= rid < 2**64:
            return rid
        if isinstance(rid, str) and len(rid) <= _MAX_ID_CHARS:
            return rid
    return None


def parse_head(
    header: Any, auth_tokens: tuple[str, ...], served_ops: frozenset[str], max_deadline_ms: float
) -> RequestHead:
    if not isinstance(header, dict):
        raise _bad(f"header must be a msgpack map, got {type(header).__name__}")
    if "id" not in header:
        raise _bad("missing field 'id' (int or str)")
    request_id = readable_id(header)
    if request_id is None:
        raise _bad(f"field 'id' must be an int or a str of at most {_MAX_ID_CHARS} chars, got {quote(header['id'])}")
    if "v" not in header:
        raise _bad("missing field 'v' (protocol version)")
    version = header["v"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # (an Array would compare elementwise)
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {quote(version)} is not supported; supported: {list(SUPPORTED_VERSIONS)}",
        )
    if auth_tokens:
        token = header.get("auth")
        if not isinstance(token, str) or not any(hmac.compare_digest(token.encode(), t.encode()) for t in auth_tokens):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing or wrong 'auth' token")
    op = header.get("op")
    if not isinstance(op, str):
        raise _bad(f"field 'op' must be a str, got {quote(op)}")
    if op not in served_ops:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"op {quote(op)} is not served; served ops: {sorted(served_ops)}")
    args = header.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _bad(f"field 'args' must be a map, got {type(args).__name__}")
    deadline_ms = header.get("deadline_ms")
    if deadline_ms is not None:
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, (int, float)) or not math.isfinite(deadline_ms):
            raise _bad(f"field 'deadline_ms' must be a finite number, got {quote(deadline_ms)}")
        if not 0 <= deadline_ms <= max_deadline_ms:
            raise _bad(f"field 'deadline_ms' must be in [0, {max_deadline_ms:g}], got {deadline_ms}")
        deadline_ms = float(deadline_ms)
    inline_arrays = header.get(INLINE_ARRAYS_KEY, False)
    if not isinstance(inline_arrays, bool):
        raise _bad(f"field {INLINE_ARRAYS_KEY!r} must be true/false, got {inline_arrays!r:.40}")
    return RequestHead(request_id, op, args, deadline_ms, inline_arrays)


def _string(args: Mapping[str, Any], key: str, max_chars: int, required: bool = False) -> str | None:
    value = args.get(key)
    if value is None:
        if required:
            raise _bad(f"args.{key}: required (a non-empty str)")
        return None
    if not isinstance(value, str):
        raise _bad(f"args.{key}: expected a str, got {type(value).__name__}")
    if len(value) > max_chars:
        raise _bad(f"args.{key}: {len(value)} chars, limit {max_chars}")
    if required and not value.strip():
        raise _bad(f"args.{key}: must not be empty")
    return value


def _float_vector(field: str, value: Any, length: int | None, max_len: int) -> np.ndarray:
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        arr = np.asarray(value, dtype=np.float32)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        arr = value.astype(np.float32, copy=False)
    else:
        raise _bad(f"{field}: expected a float32 Array or a list of numbers, got {type(value).__name__}")
    if arr.ndim != 1 or (length is not None and arr.shape[0] != length) or arr.shape[0] > max_len:
        want = f"({length},)" if length is not None else f"(N,) with N <= {max_len}"
        raise _bad(f"{field}: expected shape {want}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise _bad(f"{field}: contains NaN or infinity")
    return arr


def _tactile(args: Mapping[str, Any], limits: ImageLimits) -> tuple[np.ndarray | None, np.ndarray | None]:
    tactile = args.get("tactile")
    if tactile is None:
        return None, None
    if not isinstance(tactile, dict):
        raise _bad(f"args.tactile: expected a map with 'image' and/or 'force_torque', got {type(tactile).__name__}")
    unknown = set(tactile) - {"image", "force_torque"}
    if unknown:
        names = quote(sorted(map(quote, unknown)), 120)
        raise _bad(f"args.tactile: unknown keys {names}; allowed: image, force_torque")
    image = tactile.get("image")
    if image is not None:
        if isinstance(image, np.ndarray) and image.dtype == np.float32:
            if image.ndim != 3 or image.shape[2] != 3:
                raise _bad(f"args.tactile.image: expected shape (H, W, 3), got {list(image.shape)}")
            check_image_size("args.tactile.image", image.shape[1], image.shape[0], limits)
            if not np.isfinite(image).all():
                raise _bad("args.tactile.image: contains NaN or infinity")
        else:
            image = image_from_arg("args.tactile.image", image, limits)
    force_torque = tactile.get("force_torque")
    if force_torque is not None:
        force_torque = _float_vector("args.tactile.force_torque", force_torque, FORCE_TORQUE_DIM, FORCE_TORQUE_DIM)
    return image, force_torque


def parse_act(
    args: Mapping[str, Any], default_camera: str, limits: ImageLimits, max_instruction_chars: int
) -> Observation:
    if not args.keys() <= _ACT_ARG_NAMES:
        unknown = sorted(map(str, set(args) - _ACT_ARG_NAMES))
        raise _bad(f"args: unknown key(s) {unknown} for 'act'; it takes {list(ACT_ARGS)}")
    has_image, has_images = args.get("image") is not None, args.get("images") is not None
    if has_image == has_images:
        raise _bad("args: exactly one of 'image' (the primary camera) or 'images' (camera -> image) is required")
    if has_image:
        images = {default_camera: image_from_arg("args.image", args["image"], limits)}
    else:
        cameras = args["images"]
        if not isinstance(cameras, dict) or not cameras or len(cameras) > _MAX_CAMERAS:
            raise _bad(f"args.images: expected a map of 1..{_MAX_CAMERAS} camera name -> image")
        images = {}
        for name, value in cameras.items():
            if not isinstance(name, str):
                raise _bad(f"args.images: camera names must be str, got {quote(name)}")
            images[name] = image_from_arg(f"args.images.{name}", value, limits)
    tactile_image, force_torque = _tactile(args, limits)
    proprio = args.get("proprio")
    if proprio is not None:
        proprio = _float_vector("args.proprio", proprio, None, _MAX_PROPRIO)
    return Observation(
        images=images,
        instruction=_string(args, "instruction", max_instruction_chars),
        tactile_image=tactile_image,
        force_torque=force_torque,
        proprio=proprio,
        session=_string(args, "session", _MAX_SESSION_CHARS),
    )


def _settings(value: Any) -> GenerationSettings:
    defaults = GenerationSettings()
    if value is None:
        return defaults
    if not isinstance(value, dict):
        raise _bad(f"args.settings: expected a map, got {type(value).__name__}")

    def number(key: str, default: float) -> Any:
        v = value.get(key)
        if v is None:
            return default
        bounds = SETTING_RANGES[key]
        ok_type = isinstance(v, int) if bounds.integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not bounds.contains(v):
            kind = "an integer" if bounds.integer else "a number"
            low = "(" if bounds.low_exclusive else "["
            raise _bad(f"args.settings.{key}: expected {kind} in {low}{bounds.low:g}, {bounds.high:g}], got {quote(v)}")
        return int(v) if bounds.integer else float(v)

    return GenerationSettings(
        temperature=number("temperature", defaults.temperature),
        top_p=number("top_p", defaults.top_p),
        max_tokens=number("max_tokens", defaults.max_tokens),
        max_objects=number("max_objects", defaults.max_objects),
    )


def parse_generation(op: str, key: int, args: Mapping[str, Any], limits: ImageLimits) -> GenerationRequest:
    if args.get("image") is None:
        raise _bad("args.image: required")
    image = image_from_arg("args.image", args["image"], limits)
    stream = args.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad(f"args.stream: expected true/false, got {quote(stream)}")
    if stream and op not in STREAMING_OPS:
        raise _bad(f"args.stream: op {op!r} does not stream; streaming ops: {list(STREAMING_OPS)}")
    length = "normal"
    text: str | None = None
    if op == OP_CAPTION:
        length = args.get("length", "normal")
        if not isinstance(length, str) or length not in CAPTION_LENGTHS:
            raise _bad(f"args.length: expected one of {list(CAPTION_LENGTHS)}, got {quote(length)}")
    elif op == OP_QUERY:
        text = _string(args, "question", _MAX_TEXT_CHARS, required=True)
    else:
        text = _string(args, "object", _MAX_TEXT_CHARS, required=True)
    return GenerationRequest(
        key=key,
        skill=op,
        image=image,
        text=text,
        length=length,
        stream=stream,
        settings=_settings(args.get("settings")),
    )


def parse_session(args: Mapping[str, Any]) -> str | None:
    return _string(args, "session", _MAX_SESSION_CHARS)
