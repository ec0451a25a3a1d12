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

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


@dataclass(frozen=True)
class ImageLimits:
    max_width: int
    max_height: int
    max_pixels: int


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
    """JPEG/PNG bytes -> (H, W, 3) uint8. Header-only size check first: bombs never decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(image.data), formats=[_PIL_FORMATS[image.format]])
            width, height = pil.size
            check_image_size(field, width, height, limits)
            pil.draft("RGB", (width, height))
            rgb = np.asarray(pil.convert("RGB"))
    except ProtocolError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"{field}: cannot decode {image.format} image: {type(exc).__name__}: {exc}"
        ) from exc
    return rgb


def image_from_arg(field: str, value: Any, limits: ImageLimits) -> np.ndarray:
    """An image argument (Array uint8 (H, W, 3) or (3, H, W), or EncodedImage) -> (H, W, 3) uint8."""
    if isinstance(value, EncodedImage):
        return decode_encoded(field, value, limits)
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 and value.ndim == 3 and value.shape[0] == 3 and value.shape[2] != 3:
            value = np.ascontiguousarray(value.transpose(1, 2, 0))  # channels-first (3, H, W), unambiguous
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
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
        return any(contains_encoded_image(v, depth + 1) for v in value.values())
    return False
