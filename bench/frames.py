"""Synthetic camera frames for the benchmarks: seeded, with the texture of a real scene.

Pure noise would make PNG and JPEG unrealistically large and slow; flat colour would make them
unrealistically small. A gradient table, a few coloured blocks and mild sensor noise sit in between.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIZES_HW: dict[str, tuple[int, int]] = {"224x224": (224, 224), "640x480": (480, 640)}


def scene_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An (height, width, 3) uint8 RGB frame."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = np.stack([90 + 60 * ys + 0 * xs, 80 + 40 * xs + 0 * ys, 70 + 30 * (xs * ys)], axis=-1)  # (H, W, 3)
    frame = np.broadcast_to(base, (height, width, 3)).copy()
    for _ in range(6):
        h = int(rng.integers(height // 10, height // 3))
        w = int(rng.integers(width // 10, width // 3))
        y = int(rng.integers(0, height - h))
        x = int(rng.integers(0, width - w))
        frame[y : y + h, x : x + w] = rng.integers(0, 256, size=3)
    frame += rng.normal(0.0, 3.0, size=frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def encode(frame: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an (H, W, 3) uint8 frame (Pillow, default settings as a client would use)."""
    buffer = io.BytesIO()
    image = Image.fromarray(frame)
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buffer.getvalue()
