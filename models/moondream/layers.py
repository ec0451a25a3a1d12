"""Small building blocks shared by the vision encoder, text decoder and region head.

Attribute names (``fc1``/``fc2``, ``qkv``/``proj``) are the official checkpoint's key names.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """Linear -> tanh-approximated GELU -> Linear."""

    def __init__(self, in_dim: int, inner_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, inner_dim)
        self.fc2 = nn.Linear(inner_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AttentionProj(nn.Module):
    """Fused q/k/v projection (with bias) and the output projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x_btd: torch.Tensor, n_heads: int) -> torch.Tensor:
        """(B, T, D) -> the fused projection viewed as (B, T, 3, H, D/H) (q, k, v)."""
        bsz, seq_len, dim = x_btd.shape
        return self.qkv(x_btd).view(bsz, seq_len, 3, n_heads, dim // n_heads)

    def split_heads(
        self, x_btd: torch.Tensor, n_heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, D) -> q, k, v each (B, H, T, D/H)."""
        return heads_of(self.qkv_heads(x_btd, n_heads))

    def merge_heads(self, out_bhtd: torch.Tensor) -> torch.Tensor:
        """(B, H, T, Dh) -> projected (B, T, H*Dh)."""
        bsz, n_heads, seq_len, head_dim = out_bhtd.shape
        return self.proj(out_bhtd.transpose(1, 2).reshape(bsz, seq_len, n_heads * head_dim))


def heads_of(qkv_bt3hd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, 3, H, Dh) -> q, k, v each (B, H, T, Dh) (views)."""
    q, k, v = qkv_bt3hd.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v
