"""Per-request decoding state of one KV-cache slot, and request validation.

A text sequence (caption, query) holds the token sampled last and not yet fed. A region sequence
(detect, point) walks x -> y [-> size] -> next-token decision per object; it holds the value it
will feed next (a coordinate or a size), so every active sequence feeds exactly one input per
decode step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.interfaces import GenerationRequest, InputError
from models.moondream.tokenizer import WordChunker

TEXT_SKILLS = ("caption", "query")
REGION_SKILLS = ("detect", "point")
SKILLS = TEXT_SKILLS + REGION_SKILLS

# what a region sequence feeds next
FEED_X = "x"
FEED_Y = "y"
FEED_SIZE = "size"


@dataclass
class SequenceState:
    request: GenerationRequest
    slot: int
    pos: int  # next cache position to write
    input_tokens: int
    max_tokens: int
    started_s: float  # admit() entry, perf_counter
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    decode_started_s: float = 0.0
    # text
    stream: WordChunker | None = None
    next_token: int = 0  # sampled, not yet fed
    output_tokens: int = 0
    # region
    feed: str = FEED_X
    feed_value: tuple[float, ...] = ()
    center: tuple[float, float] = (0.0, 0.0)
    objects: list[dict[str, float]] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        return self.request.skill in TEXT_SKILLS

    @property
    def is_detect(self) -> bool:
        return self.request.skill == "detect"

    def metrics(self, now_s: float) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "prefill_ms": round(self.prefill_ms, 3),
            "decode_ms": round((now_s - self.decode_started_s) * 1000.0, 3),
            "ttft_ms": round(self.ttft_ms, 3),
        }


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_request(request: GenerationRequest, caption_lengths: tuple[str, ...]) -> None:
    """Raise :class:`InputError` naming the first problem of a request."""
    if request.skill not in SKILLS:
        raise InputError(f"unknown skill {request.skill!r}; expected one of {', '.join(SKILLS)}")
    image = request.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"image must be an (H, W, 3) uint8 RGB array, got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image must not be empty, got shape {image.shape}")
    text = request.text
    if request.skill == "query" and (not isinstance(text, str) or not text.strip()):
        raise InputError("query needs a non-empty 'question'")
    if request.skill in REGION_SKILLS and (not isinstance(text, str) or not text.strip()):
        raise InputError(f"{request.skill} needs a non-empty 'object'")
    if request.skill == "caption" and request.length not in caption_lengths:
        raise InputError(
            f"caption length must be one of {', '.join(caption_lengths)}, got {request.length!r}"
        )
    s = request.settings
    if not isinstance(s.temperature, (int, float)) or not math.isfinite(s.temperature) or s.temperature < 0:
        raise InputError(f"settings.temperature must be a finite number >= 0, got {s.temperature!r}")
    if not isinstance(s.top_p, (int, float)) or not (0.0 < s.top_p <= 1.0):
        raise InputError(f"settings.top_p must be in (0, 1], got {s.top_p!r}")
    if not _is_int(s.max_tokens) or s.max_tokens < 1:
        raise InputError(f"settings.max_tokens must be an integer >= 1, got {s.max_tokens!r}")
    if not _is_int(s.max_objects) or s.max_objects < 1:
        raise InputError(f"settings.max_objects must be an integer >= 1, got {s.max_objects!r}")
