"""Moondream's vision encoder (pre-LN ViT over 14 px patches) and its projection to the text width.

Keys (under ``model.vision.``): ``patch_emb``, ``pos_emb``, ``blocks.{i}.{ln1,attn.qkv,attn.proj,
ln2,mlp.fc1,mlp.fc2}``, ``post_ln``, ``proj_mlp.{fc1,fc2}``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.moondream.config import VisionConfig
from models.moondream.crops import Tiling, crops_to_tensor, overlap_crops, stitch_tiles
from models.moondream.layers import MLP, AttentionProj


class VisionBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.enc_dim, eps=config.ln_eps)
        self.attn = AttentionProj(config.enc_dim)
        self.ln2 = nn.LayerNorm(config.enc_dim, eps=config.ln_eps)
        self.mlp = MLP(config.enc_dim, config.enc_ff_dim, config.enc_dim)
        self.n_heads = config.enc_n_heads

    def forward(self, x_bnd: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.split_heads(self.ln1(x_bnd), self.n_heads)
        x_bnd = x_bnd + self.attn.merge_heads(F.scaled_dot_product_attention(q, k, v))
        return x_bnd + self.mlp(self.ln2(x_bnd))


class VisionModel(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_emb = nn.Linear(config.patch_dim, config.enc_dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.tokens_per_crop, config.enc_dim))
        self.blocks = nn.ModuleList([VisionBlock(config) for _ in range(config.enc_n_layers)])
        self.post_ln = nn.LayerNorm(config.enc_dim, eps=config.ln_eps)
        self.proj_mlp = MLP(2 * config.enc_dim, config.proj_inner_dim, config.proj_out_dim)

    def patchify(self, crops_bchw: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, (H/P)*(W/P), C*P*P), patches row-major, features ordered (C, P, P)."""
        bsz, channels, height, width = crops_bchw.shape
        p = self.config.enc_patch_size
        x = crops_bchw.reshape(bsz, channels, height // p, p, width // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(bsz, (height // p) * (width // p), channels * p * p)

    def encode_crops(self, crops_bchw: torch.Tensor) -> torch.Tensor:
        """(B, C, crop, crop) in [-1, 1] -> (B, grid*grid, enc_dim) after the post LayerNorm."""
        x = self.patch_emb(self.patchify(crops_bchw)) + self.pos_emb
        for block in self.blocks:
            x = block(x)
        return self.post_ln(x)

    def project(self, features_bnd: torch.Tensor, tiling: Tiling) -> torch.Tensor:
        """Encoder output for [global, tiles...] -> (grid*grid, proj_out_dim) image tokens."""
        grid = self.config.grid
        tiles = features_bnd[1:].reshape(-1, grid, grid, self.config.enc_dim)
        stitched_hwc = stitch_tiles(tiles, tiling, self.config.overlap_margin)
        pooled_chw = F.adaptive_avg_pool2d(stitched_hwc.permute(2, 0, 1), (grid, grid))
        local_nd = pooled_chw.permute(1, 2, 0).reshape(grid * grid, self.config.enc_dim)
        return self.proj_mlp(torch.cat([features_bnd[0], local_nd], dim=-1))

    def embed_image(
        self, image_hw3: np.ndarray, prepared: tuple[np.ndarray, Tiling] | None = None
    ) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (grid*grid, proj_out_dim) image tokens (729 x 2048 for the real model).

        ``prepared`` = ``overlap_crops(image_hw3, config)`` computed earlier (off the inference loop).
        """
        crops, tiling = prepared if prepared is not None else overlap_crops(image_hw3, self.config)
        x = crops_to_tensor(crops, device=self.pos_emb.device, dtype=self.pos_emb.dtype)
        return self.project(self.encode_crops(x), tiling)
