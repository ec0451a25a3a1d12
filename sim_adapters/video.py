"""Writing episode frames to a video (.mp4 through imageio-ffmpeg) or an animated GIF."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sim_adapters.interface import missing

logger = logging.getLogger(__name__)


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Frames (H, W, 3) uint8 -> ``path``; the suffix picks the format (.gif or .mp4)."""
    if not frames:
        raise ValueError("write_video: no frames")
    try:
        import imageio.v2 as imageio
    except ImportError as exc:
        raise missing("video output", "imageio imageio-ffmpeg") from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        # GIF frame durations are in hundredths of a second
        imageio.mimsave(out, list(frames), duration=1000.0 / fps, loop=0)
    else:
        try:
            imageio.mimsave(out, list(frames), fps=fps, macro_block_size=1)
        except (ImportError, ValueError) as exc:
            raise missing("mp4 output", "imageio-ffmpeg", extra=f"(or write a .gif instead): {exc}") from exc
    logger.info("wrote %d frames to %s", len(frames), out)
    return out
