"""The VTLA network: SigLIP -> projector -> Qwen2 (no LM head) -> action head.

Sequence per observation (right-padded in a batch, so causal attention alone keeps padding
invisible to every real token and no attention mask is needed)::

    [text before <image>][image tokens, all cameras][tactile k][proprio 0|1][text after][query]

``readout="query"`` reads the learned query token, the last real position, so the action
depends on every input. ``readout="legacy"`` reads the last image token, as the predecessor
did, which (causal attention) ignores the tactile token and any text after the image.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

from models.vtla.config import VTLAConfig, VtlaTextConfig, VtlaVisionConfig
from models.vtla.tactile import build_tactile_encoder

INDEX_CACHE_SIZE = 256


@dataclass(frozen=True)
class VTLAInputs:
    """One batch, already on the model's device (B observations, C cameras)."""

    pixel_values: torch.Tensor  # (B*C, 3, S, S) model dtype, sample-major
    text_before: torch.Tensor  # (B, Tb) int64, right-padded
    text_after: torch.Tensor  # (B, Ta) int64, right-padded (Ta may be 0)
    lens_before: tuple[int, ...]  # B real lengths of text_before
    lens_after: tuple[int, ...]  # B real lengths of text_after
    tactile_image: torch.Tensor | None = None  # (B, 3, s, s) model dtype
    force_torque: torch.Tensor | None = None  # (B, 6) model dtype
    proprio: torch.Tensor | None = None  # (B, P) model dtype


def siglip_config(cfg: VtlaVisionConfig) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_act=cfg.hidden_act,
        vision_use_head=False,
    )


def qwen2_config(cfg: VtlaTextConfig) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        use_cache=False,
    )


class VTLAModel(nn.Module):
    def __init__(self, cfg: VTLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.text.hidden_size
        self.vision = SiglipVisionModel(siglip_config(cfg.vision))
        self.projector = nn.Sequential(nn.Linear(cfg.vision.hidden_size, d), nn.GELU(), nn.Linear(d, d))
        self.language = Qwen2Model(qwen2_config(cfg.text))
        self.tactile = build_tactile_encoder(cfg.tactile, d)
        self.proprio_proj = nn.Linear(cfg.proprio_dim, d) if cfg.proprio_dim else None
        self.action_query = nn.Parameter(torch.randn(d) * 0.02) if cfg.action.readout == "query" else None
        widths = (d, *cfg.action.head_hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.GELU()]
        layers.append(nn.Linear(widths[-1], cfg.action.chunk_size * cfg.action.dim))
        self.action_head = nn.Sequential(*layers)
        self._index = functools.lru_cache(maxsize=INDEX_CACHE_SIZE)(self._build_index)

    @property
    def num_middle_tokens(self) -> int:
        """Image + tactile + proprio tokens: the same count for every observation."""
        return self.cfg.num_image_tokens + self.cfg.tactile.num_tokens + (1 if self.cfg.proprio_dim else 0)

    def encode_images(self, pixel_values: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(B*C, 3, S, S) -> (B, C*N, d) decoder-space image tokens."""
        hidden = self.vision.embeddings(pixel_values)
        hidden = self.vision.encoder(inputs_embeds=hidden).last_hidden_state  # (B*C, N, dv)
        if self.cfg.vision.use_post_layernorm:
            hidden = self.vision.post_layernorm(hidden)
        tokens = self.projector(hidden)  # (B*C, N, d)
        return tokens.reshape(batch_size, -1, tokens.shape[-1])

    def forward(self, inputs: VTLAInputs) -> torch.Tensor:
        """-> (B, H, action_dim) normalised actions (model dtype)."""
        batch_size = len(inputs.lens_before)
        embed = self.language.embed_tokens
        image = self.encode_images(inputs.pixel_values, batch_size)  # (B, C*N, d)
        middle = [image, self.tactile(batch_size, inputs.tactile_image, inputs.force_torque)]
        if self.proprio_proj is not None:
            assert inputs.proprio is not None, "this model needs proprio"
            middle.append(self.proprio_proj(inputs.proprio).unsqueeze(1))
        d = image.shape[-1]
        parts = [embed(inputs.text_before), *middle, embed(inputs.text_after)]
        if self.action_query is not None:
            parts.append(self.action_query.view(1, 1, d).expand(batch_size, 1, d))
        parts.append(image.new_zeros(batch_size, 1, d))  # the source of padding positions
        source = torch.cat(parts, dim=1)  # (B, S, d)

        index, readout = self._index(
            inputs.lens_before,
            inputs.lens_after,
            inputs.text_before.shape[1],
            inputs.text_after.shape[1],
            image.device,
        )
        rows = torch.arange(batch_size, device=image.device)
        sequence = source[rows.unsqueeze(1), index]  # (B, L, d)
        hidden = self.language(inputs_embeds=sequence, use_cache=False).last_hidden_state  # (B, L, d)
        read = hidden[rows, readout]  # (B, d)
        out = self.action_head(read)  # (B, H*dim)
        return out.view(batch_size, self.cfg.action.chunk_size, self.cfg.action.dim)

    def _build_index(
        self,
        lens_before: tuple[int, ...],
        lens_after: tuple[int, ...],
        width_before: int,
        width_after: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (B, L) into the concatenated source, readout position (B,)), cached per shape."""
        with torch.inference_mode(False):  # cached: must stay usable outside inference mode
            return self._build_index_now(lens_before, lens_after, width_before, width_after, device)

    def _build_index_now(
        self,
        lens_before: tuple[int, ...],
        lens_after: tuple[int, ...],
        width_before: int,
        width_after: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_mid = self.num_middle_tokens
        n_query = 1 if self.action_query is not None else 0
        before = torch.tensor(lens_before, dtype=torch.long).unsqueeze(1)  # (B, 1)
        after = torch.tensor(lens_after, dtype=torch.long).unsqueeze(1)  # (B, 1)
        end_mid = before + n_mid
        end_after = end_mid + after
        end_query = end_after + n_query
        if self.cfg.action.readout == "query":
            readout = end_query.squeeze(1) - 1
            length = int(end_query.max())
        else:  # the last image token; nothing after it can reach it, so stop the sequence there
            readout = before.squeeze(1) + self.cfg.num_image_tokens - 1
            length = int(readout.max()) + 1
        pos = torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
        mid_start = width_before
        after_start = mid_start + n_mid
        query_start = after_start + width_after
        pad_index = query_start + n_query
        index = torch.full((len(lens_before), length), pad_index, dtype=torch.long)
        index = torch.where(pos < end_query, query_start + pos - end_after, index)
        index = torch.where(pos < end_after, after_start + pos - end_mid, index)
        index = torch.where(pos < end_mid, mid_start + pos - before, index)
        index = torch.where(pos < before, pos, index)
        return index.to(device), readout.to(device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
