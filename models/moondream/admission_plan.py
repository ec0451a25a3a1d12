"""What Moondream's next admission unit works on: the crops a vision forward encodes, the requests
a prefill forward shares. Pure planning over the requests admitted and not yet prefilled, in
admission order; :class:`models.moondream.generator.MoondreamGenerator` runs the forwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from models.moondream.crops import CROP_RESIZE_HOST, CROP_RESIZE_MODES, Tiling
from models.moondream.sequence import SequenceState


@dataclasses.dataclass(frozen=True)
class AdmissionOptions:
    """How admission units group work of several waiting requests (``[vlm.options]``)."""

    batch: bool = True  # crops of several requests in one vision forward, several prefills in one
    prefill_batch: int = 4  # most requests prefilled in one forward
    prefill_length_bucket: int = 32  # requests share a prefill when their lengths round up alike
    # most positions (rows x padded length) in one prefill forward; None: the cache context, so a
    # shared prefill never needs more activation memory than one prefill of the whole context
    prefill_tokens: int | None = None
    crop_resize: str = CROP_RESIZE_HOST  # "host" (libvips/Pillow, reference) or "device" (torch)

    def __post_init__(self) -> None:
        if self.prefill_batch < 1:
            raise ValueError("prefill_batch must be >= 1")
        if self.prefill_length_bucket < 1:
            raise ValueError("prefill_length_bucket must be >= 1")
        if self.prefill_tokens is not None and self.prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1")
        if self.crop_resize not in CROP_RESIZE_MODES:
            raise ValueError(f"crop_resize must be one of {', '.join(CROP_RESIZE_MODES)}, got {self.crop_resize!r}")


@dataclasses.dataclass
class PendingAdmission:
    """A request between admit() and its prefill: crops encoded chunk by chunk."""

    seq: SequenceState
    crops: np.ndarray | torch.Tensor  # (N, crop, crop, 3) uint8, host or device: global crop then tiles
    tiling: Tiling
    prompt: list[int]
    features: list[torch.Tensor] = dataclasses.field(default_factory=list)  # (n, grid*grid, enc_dim) each
    encoded: int = 0

    @property
    def remaining_crops(self) -> int:
        return len(self.crops) - self.encoded

    @property
    def input_tokens(self) -> int:
        return self.seq.input_tokens


def encode_pieces(
    admitting: Iterable[PendingAdmission], chunk_crops: int, batch: bool
) -> list[tuple[PendingAdmission, int]]:
    """The crops of the next vision forward -> [(admission, crops taken)]: up to ``chunk_crops``
    crops in admission order, from several requests when ``batch`` and the oldest has fewer left."""
    budget = chunk_crops
    pieces: list[tuple[PendingAdmission, int]] = []
    for adm in admitting:
        take = min(adm.remaining_crops, budget)
        if take > 0:
            pieces.append((adm, take))
            budget -= take
        if budget == 0 or not batch:
            break
    return pieces


def prefill_group(
    admitting: Sequence[PendingAdmission], options: AdmissionOptions, prefill_tokens: int, context: int
) -> list[PendingAdmission]:
    """The oldest admission and the fully encoded ones that can share its prefill forward: at most
    ``prefill_batch`` rows whose lengths round up to the same ``prefill_length_bucket``, and no more
    rows of that padded length than ``prefill_tokens`` positions hold."""
    head = admitting[0]
    group = [head]
    if not options.batch:
        return group
    bucket = options.prefill_length_bucket
    head_bucket = -(-head.input_tokens // bucket)
    rows_fit = prefill_tokens // min(context, head_bucket * bucket)
    for adm in admitting[1:]:
        if len(group) >= min(options.prefill_batch, rows_fit):
            break
        if adm.remaining_crops == 0 and -(-adm.input_tokens // bucket) == head_bucket:
            group.append(adm)
    return group
