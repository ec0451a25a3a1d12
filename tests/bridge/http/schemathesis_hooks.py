"""schemathesis hooks for the companion's spec: ``format: data-uri`` strings are real images half
the time (so the success paths and their response schemas get exercised), else any string the
pattern admits (base64 that is no image: the documented 400). Loaded with
``SCHEMATHESIS_HOOKS=tests.bridge.http.schemathesis_hooks`` (docs/http.md)."""

from __future__ import annotations

import base64
import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

from bridge.http.route_bodies import DATA_URI_PATTERN


def _image_uri(width: int, height: int, fmt: str, shade: int) -> str:
    pixels = np.full((height, width, 3), shade, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


_IMAGES = st.builds(_image_uri, st.integers(1, 48), st.integers(1, 48), st.sampled_from(["PNG", "JPEG", "WEBP"]),
                    st.integers(0, 255))
schemathesis.openapi.format("data-uri", st.one_of(_IMAGES, st.from_regex(DATA_URI_PATTERN)))
