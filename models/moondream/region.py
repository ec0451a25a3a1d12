"""Moondream's region head: coordinates and sizes to/from the text decoder's hidden state.

Coordinates and sizes enter the decoder as Fourier features through a linear encoder; they
leave it through MLP decoders over bins, read from the hidden state *before* the final
LayerNorm. A coordinate bin ``b`` of ``n`` is ``b / n``; a size bin ``b`` is
``2 ** (b / (n - 1) * range + min)`` (log scale, 2^-10 .. 1 for the real model).

Keys (under ``model.region.``): ``coord_features`` (1, coord_feat_dim/2), ``coord_encoder``,
``coord_decoder.{fc1,fc2}``, ``size_features`` (2, size_feat_dim/2), ``size_encoder``,
``size_decoder.{fc1,fc2}``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.moondream.config import RegionConfig
from models.moondream.layers import MLP


def fourier_features(x_bk: torch.Tensor, freqs_kf: torch.Tensor) -> torch.Tensor:
    """(B, K) values, (K, F) frequencies -> (B, 2F) [cos, sin] of 2*pi*x@freqs."""
    angles = 2 * math.pi * (x_bk @ freqs_kf)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class RegionHead(nn.Module):
    def __init__(self, config: RegionConfig) -> None:
        super().__init__()
        self.config = config
        self.coord_features = nn.Parameter(torch.zeros(1, config.coord_feat_dim // 2))
        self.coord_encoder = nn.Linear(config.coord_feat_dim, config.dim)
        self.coord_decoder = MLP(config.dim, config.inner_dim, config.coord_out_dim)
        self.size_features = nn.Parameter(torch.zeros(2, config.size_feat_dim // 2))
        self.size_encoder = nn.Linear(config.size_feat_dim, config.dim)
        self.size_decoder = MLP(config.dim, config.inner_dim, config.size_out_dim)

    def encode_coord(self, coord_b: torch.Tensor) -> torch.Tensor:
        """(B,) coordinates in [0, 1] -> (B, D) input embeddings."""
        feats = fourier_features(coord_b[:, None].to(self.coord_features.dtype), self.coord_features)
        return self.coord_encoder(feats)

    def decode_coord(self, hidden_bd: torch.Tensor) -> torch.Tensor:
        """(B, D) hidden -> (B,) coordinate in [0, 1): argmax bin / bins."""
        logits = self.coord_decoder(hidden_bd)
        return logits.argmax(dim=-1).float() / logits.shape[-1]

    def encode_size(self, size_b2: torch.Tensor) -> torch.Tensor:
        """(B, 2) width, height in (0, 1] -> (B, D) input embeddings."""
        feats = fourier_features(size_b2.to(self.size_features.dtype), self.size_features)
        return self.size_encoder(feats)

    def decode_size(self, hidden_bd: torch.Tensor) -> torch.Tensor:
        """(B, D) hidden -> (B, 2) width, height from the log-scale bins."""
        logits = self.size_decoder(hidden_bd).view(hidden_bd.shape[0], 2, -1)
        return size_from_bins(logits.argmax(dim=-1), self.config)


def size_from_bins(bins_b2: torch.Tensor, config: RegionConfig) -> torch.Tensor:
    fraction = bins_b2.float() / (config.size_bins - 1)
    return torch.pow(2.0, fraction * config.size_log2_range + config.size_log2_min)


def box_from_center(x: float, y: float, width: float, height: float) -> dict[str, float]:
    """Center and size -> box corners, clipped to the image ([0, 1])."""
    return {
        "x_min": min(max(x - width / 2, 0.0), 1.0),
        "y_min": min(max(y - height / 2, 0.0), 1.0),
        "x_max": min(max(x + width / 2, 0.0), 1.0),
        "y_max": min(max(y + height / 2, 0.0), 1.0),
    }
