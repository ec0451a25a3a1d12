"""Image arguments -> (H, W, 3) uint8 RGB arrays, with size limits checked before decoding."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from bridge.codec import EncodedImage
from bridge.protocol import ErrorCode, ProtocolError
from bridge.quoting import quote

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
_UINT8 = np.dtype(np.uint8)


@dataclass(frozen=True)
class ImageLimits:
    max_width: int
    max_height: int
    max_pixels: int
    # decode work: decoded bytes (pixels x channels x bytes per sample) per encoded byte. Camera
    # frames are ~10-60, a blank 4096x4096 JPEG ~190; deflate bombs reach ~1000. Images that decode
    # to at most FREE_DECODED_BYTES are always accepted (they are cheap whatever their ratio).
    max_decoded_bytes_per_byte: int = 256


FREE_DECODED_BYTES = 4 * 1024 * 1024  # ~1.4 MP RGB: decodes in a few ms
_CHANNELS = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I": 4, "F": 4, "LA": 2, "PA": 2,
             "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4}
_PNG_IEND = b"IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"


def _check_complete(field: str, image: EncodedImage) -> None:
    """Reject a truncated file before decoding it (a decoder would fill the missing pixels)."""
    tail = bytes(image.data[-64:])
    complete = _PNG_IEND in tail if image.format == "png" else _JPEG_EOI in tail
    if not complete:
        marker = "IEND chunk" if image.format == "png" else "end-of-image marker"
        message = f"{field}: cannot decode {image.format} image: truncated (no {marker})"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message)


def _decoded_bytes(pil: Image.Image, image: EncodedImage) -> int:
    width, height = pil.size
    channels = _CHANNELS.get(pil.mode, 4)
    data = image.data
    if image.format == "png" and len(data) > 26 and bytes(data[12:16]) == b"IHDR" and data[24] == 16:
        channels *= 2  # 16-bit samples: twice the inflate and unfilter work
    return width * height * channels


def check_decode_work(field: str, pil: Image.Image, image: EncodedImage, limits: ImageLimits) -> None:
    """payload_too_large when decoding would cost far more than the bytes sent justify."""
    decoded = _decoded_bytes(pil, image)
    if decoded > FREE_DECODED_BYTES and decoded > len(image.data) * limits.max_decoded_bytes_per_byte:
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{field}: {pil.size[0]}x{pil.size[1]} {image.format} of {len(image.data)} bytes would decode to "
            f"{decoded} bytes (more than {limits.max_decoded_bytes_per_byte} per byte sent)",
        )


def check_image_size(field: str, width: int, height: int, limits: ImageLimits) -> None:
    """payload_too_large over the limits, bad_request for an empty image."""
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{field}: {width}x{height} exceeds the limits "
            f"(max {limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels)",
        )
    if width == 0 or height == 0:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: empty image ({width}x{height})")


def decode_encoded(field: str, image: EncodedImage, limits: ImageLimits) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8. Header-only checks first: bombs never decode.

    Checked before decoding: the file is complete, width/height/pixels within the limits, and the
    decode work per byte sent (``check_decode_work``)."""
    _check_complete(field, image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(image.data), formats=[_PIL_FORMATS[image.format]])
            width, height = pil.size
            check_image_size(field, width, height, limits)
            check_decode_work(field, pil, image, limits)
            pil.draft("RGB", (width, height))
            rgb = np.asarray(pil.convert("RGB"))
    except ProtocolError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{field}: cannot decode {image.format} image: {type(exc).__name__}: {quote(str(exc), 120)}",
        ) from exc
    return rgb


def image_from_arg(field: str, value: Any, limits: ImageLimits) -> np.ndarray:
    """An image argument (Array uint8 (H, W, 3) or (3, H, W), or EncodedImage) -> (H, W, 3) uint8."""
    if isinstance(value, EncodedImage):
        return decode_encoded(field, value, limits)
    if isinstance(value, np.ndarray):
        uint8 = value.dtype is _UINT8 or value.dtype == np.uint8  # (the singleton first: == converts np.uint8)
        if uint8 and value.ndim == 3 and value.shape[0] == 3 and value.shape[2] != 3:
            value = np.ascontiguousarray(value.transpose(1, 2, 0))  # channels-first (3, H, W), unambiguous
        if not uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"{field}: expected an (H, W, 3) uint8 RGB array (or channels-first (3, H, W) with W != 3), "
                f"got shape {list(value.shape)} {value.dtype}",
            )
        check_image_size(field, value.shape[1], value.shape[0], limits)
        return value
    raise ProtocolError(
        ErrorCode.BAD_REQUEST,
        f"{field}: expected an image (Array (H, W, 3) uint8 or {{'__image__': 'jpeg'|'png'}}), "
        f"got {type(value).__name__}",
    )


def contains_encoded_image(value: Any, depth: int = 0) -> bool:
    """True when decoding this argument tree needs JPEG/PNG work (done off the I/O thread)."""
    if isinstance(value, EncodedImage):
        return True
    if depth < 3 and isinstance(value, dict):
        for item in value.values():  # (a loop, not any(genexpr): this runs for every request)
            if isinstance(item, EncodedImage) or (isinstance(item, dict) and contains_encoded_image(item, depth + 1)):
                return True
    return False
