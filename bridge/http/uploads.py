"""Images arriving over HTTP (uploads and ``data:`` URIs) -> protocol image arguments.

JPEG and PNG pass through unchanged (the inference server decodes them after checking its
limits); other formats Pillow reads are decoded here, after the same checks, to RGB arrays.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from bridge.codec import EncodedImage, sniff_image_format
from bridge.http.errors import ApiError
from bridge.http.route_bodies import DATA_URI_PATTERN
from bridge.image_args import ImageLimits, check_image_size
from bridge.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class HttpImage:
    arg: EncodedImage | np.ndarray  # what the protocol's ``image`` argument carries
    width: int
    height: int


def decode_data_uri(uri: str, field: str = "image_url") -> bytes:
    """``data:image/jpeg;base64,...`` (already matched against DATA_URI_PATTERN) -> bytes."""
    if not re.search(DATA_URI_PATTERN, uri):
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: expected data:<mime>;base64,<data> (no remote URLs)")
    payload = uri.partition(",")[2]
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: invalid base64") from None


def _check_size(width: int, height: int, limits: ImageLimits, field: str) -> None:
    try:
        check_image_size(field, width, height, limits)
    except ProtocolError as exc:  # the server's own check, as an HTTP status
        raise ApiError(413 if exc.code == ErrorCode.PAYLOAD_TOO_LARGE else 400, exc.code, exc.message) from None


def load_image(data: bytes, limits: ImageLimits, field: str = "image") -> HttpImage:
    """Bytes of an image file -> protocol argument and size (width, height)."""
    if not data:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: empty")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
            _check_size(width, height, limits, field)
            fmt = sniff_image_format(data)
            if fmt is not None:
                return HttpImage(EncodedImage(fmt, data), width, height)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except Image.DecompressionBombError as exc:  # over Pillow's own bomb limit: too large, as documented
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: not a readable image") from None
    return HttpImage(np.ascontiguousarray(rgb), width, height)


def load_rgb_array(data: bytes, limits: ImageLimits, field: str) -> np.ndarray:
    """Bytes of an image file -> (H, W, 3) uint8 RGB, decoded here (e.g. a tactile image)."""
    if not data:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_size(img.size[0], img.size[1], limits, field)
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except Image.DecompressionBombError as exc:  # over Pillow's own bomb limit: too large, as documented
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{field}: not a readable image") from None
