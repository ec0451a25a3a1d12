"""Partial rotary embedding for q and k together, from precomputed tables, in a few kernels.

Moondream rotates the first ``rot_dim`` dims of each head (first half, second half). Instead of
slicing, casting and concatenating q and k separately (about ten kernels each), the rotary part
of q and k is read from the fused qkv projection in one strided view, rotated in float32 with
``x * cos + rotate_half(x) * sin`` against tables that already hold ``[cos, cos]`` and
``[-sin, sin]``, and written back into the qkv tensor in place: five kernels for both.
"""

from __future__ import annotations

import torch

from models.moondream.config import TextConfig


def rope_tables(config: TextConfig, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, signed sin tables, each (context, rot_dim) float32: ``[cos, cos]`` and ``[-sin, sin]``."""
    half = config.rot_dim // 2
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, half, dtype=torch.float32) * 2 / config.rot_dim))
    angles = torch.arange(context, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def rotate_qk_(qkv_bt3hd: torch.Tensor, cos_btr: torch.Tensor, sin_btr: torch.Tensor, rot_dim: int) -> None:
    """Rotate the first ``rot_dim`` dims of q and k inside a (B, T, 3, H, Dh) qkv tensor, in place.

    ``cos_btr``/``sin_btr``: (B or 1, T, rot_dim) float32 rows of :func:`rope_tables` at each
    token's position (broadcast over q/k and heads).
    """
    half = rot_dim // 2
    x = qkv_bt3hd[:, :, :2, :, :rot_dim].float()  # (B, T, 2, H, rot): q and k
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    qkv_bt3hd[:, :, :2, :, :rot_dim] = x * cos_btr[:, :, None, None] + swapped * sin_btr[:, :, None, None]
