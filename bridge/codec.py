"""msgpack encoding of protocol messages: a header map plus zero-copy buffer frames.

Arrays use openpi-client's ``msgpack_numpy`` convention (``__ndarray__`` maps with bin keys);
large arrays travel as their own ZeroMQ frames (``"frame": k``) instead of inline ``data``.
Nothing here ever unpickles: only msgpack's plain types are decoded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from bridge.header_bounds import HeaderBounds, check_header_structure
from bridge.protocol import IMAGE_FORMATS, IMAGE_KEY, NDARRAY_KEY, NPGENERIC_KEY, ErrorCode, ProtocolError
from bridge.quoting import quote

# Arrays this large or larger are sent as separate frames by default (zero-copy on both ends).
DEFAULT_FRAME_THRESHOLD_BYTES = 1024
# Frames smaller than this are copied into the outgoing message by pyzmq (``Socket.copy_threshold``)
# rather than sent zero-copy: a zero-copy frame's release wakes pyzmq's garbage-collector thread once
# per message, which costs more than the copy up to ~1-2 MB (measured on 2 cores: a 224x224 frame's
# round trip 50 us shorter copied, a 640x480 one 55 us; 2 MB and up are faster zero-copy).
SEND_COPY_MAX_BYTES = 1 << 20
MAX_NDIM = 32
_REJECTED_DTYPE_KINDS = frozenset("OVc")

_K_NDARRAY = NDARRAY_KEY.encode()
_K_NPGENERIC = NPGENERIC_KEY.encode()
_K_IMAGE = IMAGE_KEY.encode()


@dataclass(frozen=True)
class EncodedImage:
    """A JPEG/PNG image as sent on the wire; decoded later, after its limits are checked."""

    format: str  # "jpeg" | "png"
    data: bytes | memoryview


Buffer = bytes | memoryview

_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"))


def sniff_image_format(data: bytes | memoryview) -> str | None:
    """"jpeg" or "png" from the file's magic bytes, else None."""
    head = bytes(data[:8])
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


# ----------------------------------------------------------------------------- encoding


class _FrameCollector:
    """msgpack ``default`` hook that turns numpy values into protocol maps, collecting frames."""

    def __init__(self, frame_threshold_bytes: int | None) -> None:
        self.threshold = frame_threshold_bytes
        self.frames: list[Buffer] = []

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return self._array(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, EncodedImage):
            return self._image(obj)
        raise TypeError(f"cannot encode {type(obj).__name__} in a protocol message")

    def _array(self, arr: np.ndarray) -> dict[bytes, Any]:
        if arr.dtype.kind in _REJECTED_DTYPE_KINDS:
            raise TypeError(f"arrays of dtype {arr.dtype} cannot be sent")
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d arrays into 1-d)
        if self.threshold is not None and arr.nbytes >= self.threshold:
            self.frames.append(_flat_bytes(arr))
            return {
                _K_NDARRAY: True,
                b"dtype": arr.dtype.str,
                b"shape": list(arr.shape),
                b"frame": len(self.frames) - 1,
            }
        # same key order and types as openpi-client's pack_array, so its decoder reads it
        return {_K_NDARRAY: True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}

    def _image(self, image: EncodedImage) -> dict[bytes, Any]:
        if self.threshold is not None and len(image.data) >= self.threshold:
            self.frames.append(image.data)
            return {_K_IMAGE: image.format, b"frame": len(self.frames) - 1}
        return {_K_IMAGE: image.format, b"data": bytes(image.data)}


def _flat_bytes(arr: np.ndarray) -> memoryview:
    """A C-contiguous array's bytes as a flat memoryview (no copy). The buffer protocol's own cast
    where numpy exports the dtype (one C call); else through a uint8 view (datetime64, str)."""
    try:
        return memoryview(arr).cast("B")  # type: ignore[arg-type]
    except (TypeError, ValueError, NotImplementedError):
        return memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def encode_message(
    header: dict[str, Any], frame_threshold_bytes: int | None = DEFAULT_FRAME_THRESHOLD_BYTES
) -> list[Buffer]:
    """Header map (may contain numpy arrays and EncodedImages) -> [header_bytes, buffer_0, ...].

    ``frame_threshold_bytes=None`` keeps every array inline (openpi-compatible single blob).
    """
    collector = _FrameCollector(frame_threshold_bytes)
    header_bytes = msgpack.packb(header, default=collector, use_bin_type=True)
    return [header_bytes, *collector.frames]


# ----------------------------------------------------------------------------- decoding


_BIN_KEYS = {k: k.encode() for k in (NDARRAY_KEY, NPGENERIC_KEY, IMAGE_KEY, "data", "frame", "dtype", "shape")}
_MISSING = object()


def _get(obj: dict[Any, Any], key: str) -> Any:
    """Field lookup accepting the key as msgpack str or bin (the str form wins); ``_MISSING`` when absent."""
    value = obj.get(key, _MISSING)
    return obj.get(_BIN_KEYS[key], _MISSING) if value is _MISSING else value


@functools.lru_cache(maxsize=64)
def _parse_dtype(raw: str) -> np.dtype[Any]:
    """A numpy dtype string -> dtype; cached (clients send the same few), errors not cached."""
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"array: unknown dtype {raw!r}") from exc
    if dtype.kind in _REJECTED_DTYPE_KINDS or dtype.itemsize == 0 or dtype.hasobject:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"array: dtype {raw!r} is not allowed (object/void/complex)")
    return dtype


class _Materializer:
    """msgpack ``object_hook`` that builds arrays and encoded images from their maps.

    It runs for every map of every header (both ways), so a plain map costs two dict lookups per
    marker and no further call: per request this is most of the decoding's Python."""

    def __init__(self, buffers: Sequence[Buffer], max_array_bytes: int) -> None:
        self.buffers = buffers
        self.max_array_bytes = max_array_bytes
        self.error: ProtocolError | None = None  # the first bad value; decoding goes on (one pass)

    def __call__(self, obj: dict[Any, Any]) -> Any:
        try:
            if _K_NDARRAY in obj or NDARRAY_KEY in obj:
                return self._array(obj)
            if _K_IMAGE in obj or IMAGE_KEY in obj:
                return self._image(obj)
            if _K_NPGENERIC in obj or NPGENERIC_KEY in obj:
                return self._scalar(obj)
        except ProtocolError as exc:
            if self.error is None:
                self.error = exc
        return obj

    def _payload(self, obj: dict[Any, Any], what: str) -> Buffer:
        get = obj.get  # (each field as str or bin key, the str form first: as _get, without its call)
        data, index = get("data", _MISSING), get("frame", _MISSING)
        if data is _MISSING:
            data = get(b"data", _MISSING)
        if index is _MISSING:
            index = get(b"frame", _MISSING)
        if (data is _MISSING) == (index is _MISSING):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}: exactly one of 'data' or 'frame' is required")
        if data is not _MISSING:
            if not isinstance(data, bytes):
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}: 'data' must be bin, got {type(data).__name__}")
            return data
        if type(index) is not int:  # (msgpack gives exact ints; a bool is no frame index)
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}: 'frame' must be an int, got {quote(index)}")
        if not 0 <= index < len(self.buffers):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"{what}: 'frame' {index} does not exist (message has {len(self.buffers)} buffer frames)",
            )
        return self.buffers[index]

    @staticmethod
    def _dtype(raw: Any) -> np.dtype[Any]:
        """A map's 'dtype' value (``_MISSING`` when absent) -> the dtype."""
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        if not isinstance(raw, str) or len(raw) > 16:
            shown = None if raw is _MISSING else raw
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"array: 'dtype' must be a numpy dtype string, got {quote(shown)}"
            )
        return _parse_dtype(raw)

    def _array(self, obj: dict[Any, Any]) -> np.ndarray:
        get = obj.get  # (as in _payload)
        raw_dtype, shape = get("dtype", _MISSING), get("shape", _MISSING)
        if raw_dtype is _MISSING:
            raw_dtype = get(b"dtype", _MISSING)
        if shape is _MISSING:
            shape = get(b"shape", _MISSING)
        dtype = self._dtype(raw_dtype)
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM:
            shown = None if shape is _MISSING else shape
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"array: 'shape' must be a list of ints, got {quote(shown)}")
        for d in shape:
            if type(d) is not int or d < 0:  # (a bool is no extent)
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, f"array: 'shape' must hold non-negative ints, got {quote(shape)}"
                )
        expected_bytes = math.prod(shape) * dtype.itemsize
        # a zero dim makes the product 0 whatever the others are: bound every dim as well, so
        # no later reshape/astype meets an extent numpy cannot represent
        extent_bytes = math.prod([max(d, 1) for d in shape]) * dtype.itemsize if 0 in shape else expected_bytes
        if extent_bytes > self.max_array_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"array of shape {quote(list(shape))} {dtype.str} exceeds the limit of {self.max_array_bytes} bytes",
            )
        data = self._payload(obj, "array")
        if len(data) != expected_bytes:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"array: shape {quote(list(shape))} of {dtype.str} needs {expected_bytes} bytes, got {len(data)}",
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def _image(self, obj: dict[Any, Any]) -> EncodedImage:
        fmt = _get(obj, IMAGE_KEY)
        if isinstance(fmt, bytes):
            fmt = fmt.decode("ascii", "replace")
        if fmt not in IMAGE_FORMATS:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"image: '__image__' must be one of {list(IMAGE_FORMATS)}, got {quote(fmt)}"
            )
        data = self._payload(obj, "image")
        if len(data) > self.max_array_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"encoded image is {len(data)} bytes, limit {self.max_array_bytes}"
            )
        return EncodedImage(fmt, data)

    def _scalar(self, obj: dict[Any, Any]) -> Any:
        data = _get(obj, "data")
        return npgeneric_value(self._dtype(_get(obj, "dtype")), None if data is _MISSING else data)


# numpy scalar kind -> the msgpack types its 'data' may have (openpi packs ``obj.item()``)
_NPGENERIC_DATA_TYPES: dict[str, tuple[type, ...]] = {
    "b": (bool,), "i": (int,), "u": (int,), "f": (int, float), "U": (str,),
}


def npgeneric_value(dtype: np.dtype[Any], value: Any) -> bool | int | float | str:
    """openpi's numpy-scalar map -> the plain Python value, so that it is accepted wherever the
    protocol takes a number, a boolean (or a str): ids, deadlines, settings, list elements."""
    allowed = _NPGENERIC_DATA_TYPES.get(dtype.kind)
    if allowed is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"numpy scalar: dtype {dtype.str!r} is not a number or a bool")
    if not isinstance(value, allowed) or (isinstance(value, bool) and dtype.kind != "b"):
        message = f"numpy scalar: 'data' {quote(value)} does not fit dtype {dtype.str}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message)
    try:
        plain: bool | int | float | str = dtype.type(value).item()
    except (OverflowError, ValueError, TypeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"numpy scalar: {quote(value)} is not a valid {dtype.str}") from exc
    if dtype.kind in "iu" and plain != value:  # out of range for the dtype (numpy may wrap)
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"numpy scalar: {quote(value)} is out of range for {dtype.str}")
    return plain



class HeaderError(ProtocolError):
    """A header that could not be decoded into a valid request. ``header`` is what was decoded
    (None when nothing could be), so that the error reply can still echo the request's id."""

    def __init__(self, code: str, message: str, header: Any = None) -> None:
        super().__init__(code, message)
        self.header = header


REQUEST_BOUNDS = HeaderBounds()


def decode_header(
    header_bytes: Buffer,
    buffers: Sequence[Buffer],
    max_array_bytes: int,
    bounds: HeaderBounds = REQUEST_BOUNDS,
) -> Any:
    """Decode one header frame, once, materialising arrays (zero-copy views of ``buffers``).

    The structure is checked against ``bounds`` before anything is built (see header_bounds), so
    a header costs at most ``bounds.max_objects`` small objects plus its str/bin payloads.
    Raises HeaderError (a ProtocolError) carrying whatever was decoded.
    """
    check_header_structure(header_bytes, bounds)
    materialize = _Materializer(buffers, max_array_bytes)
    try:
        header = msgpack.unpackb(
            header_bytes,
            raw=False,
            object_hook=materialize,
            strict_map_key=False,
            max_str_len=bounds.max_str_len,
            max_bin_len=max_array_bytes,
            max_array_len=bounds.max_array_len,
            max_map_len=bounds.max_map_len,
            max_ext_len=max_array_bytes,
        )
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise HeaderError(
            ErrorCode.BAD_REQUEST, f"header is not valid msgpack: {type(exc).__name__}: {quote(str(exc), 120)}"
        ) from exc
    if materialize.error is not None:
        raise HeaderError(materialize.error.code, materialize.error.message, header)
    return header
