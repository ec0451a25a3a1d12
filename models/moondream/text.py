"""Moondream's Phi-style text decoder with a multi-slot KV cache.

Blocks are parallel: ``x + attn(ln(x)) + mlp(ln(x))`` with a fused, biased qkv and rotary
embedding on the first ``rot_dim`` dims of each head. The first ``prefix_len`` positions (BOS +
image tokens) attend to each other bidirectionally; everything after is causal.

Keys (under ``model.text.``): ``wte`` (no ``.weight`` suffix), ``blocks.{i}.{ln,attn.qkv,attn.proj,
mlp.fc1,mlp.fc2}``, ``post_ln``, ``lm_head``.

Upstream rotates (first half, second half) of the rotary dims and writes the result interleaved;
we write it back as halves. That is the same permutation for q and k, so attention is identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from models.moondream.config import TextConfig
from models.moondream.layers import MLP, AttentionProj, heads_of
from models.moondream.rotary import rope_tables, rotate_qk_


class KVCache:
    """Preallocated keys/values: each (layers, slots, heads, context, head_dim)."""

    def __init__(
        self, config: TextConfig, slots: int, context: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (config.n_layers, slots, config.n_heads, context, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots = slots
        self.context = context

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class TextBlock(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.attn = AttentionProj(config.dim)
        self.mlp = MLP(config.dim, config.ff_dim, config.dim)


class TextModel(nn.Module):
    def __init__(self, config: TextConfig, prefix_len: int) -> None:
        super().__init__()
        self.config = config
        self.prefix_len = prefix_len
        self.wte = nn.Parameter(torch.zeros(config.vocab_size, config.dim))
        blocks = [TextBlock(config) for _ in range(config.n_layers)]
        self.blocks = nn.ModuleList(blocks)
        self._blocks: list[TextBlock] = blocks  # the same modules, typed
        self.post_ln = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size)
        cos, sin = rope_tables(config, config.max_context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def rebuild_rope(self, device: torch.device) -> None:
        """Recompute the rotary tables (float32) on ``device``, e.g. after loading onto a meta skeleton."""
        cos, sin = rope_tables(self.config, self.config.max_context)
        self.rope_cos = cos.to(device)
        self.rope_sin = sin.to(device)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.wte)

    def logits(self, hidden_bd: torch.Tensor) -> torch.Tensor:
        """Hidden state before the final LayerNorm (B, D) -> logits (B, vocab)."""
        return self.lm_head(self.post_ln(hidden_bd))

    def prefix_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """(T, T) bool: causal, except that the first prefix_len positions see each other."""
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril_()
        prefix = min(self.prefix_len, seq_len)
        mask[:prefix, :prefix] = True
        return mask

    def prefill(
        self, embeds_btd: torch.Tensor, cache: KVCache | None = None, slot: int | Sequence[int] = 0
    ) -> torch.Tensor:
        """Run whole sequences from position 0 -> hidden (B, T, D); fills ``cache[slots, :T]`` if given.

        ``slot`` is one cache slot per row (an int for one row). Rows of several requests share
        one forward when right-padded to a common T: the mask is causal after the prefix (the
        same for every row), so padding positions are invisible to the real ones; their cache
        entries lie after the row's length and are overwritten by its decode steps before any
        step reads them.
        """
        batch, seq_len = embeds_btd.shape[:2]
        slots = [slot] if isinstance(slot, int) else list(slot)
        if len(slots) != batch:
            raise ValueError(f"prefill of {batch} rows needs {batch} cache slots, got {len(slots)}")
        slot_index = torch.tensor(slots, dtype=torch.long, device=embeds_btd.device) if batch > 1 else None
        cos = self.rope_cos[:seq_len][None]  # (1, T, rot)
        sin = self.rope_sin[:seq_len][None]
        mask_tt = self.prefix_mask(seq_len, embeds_btd.device)
        x = embeds_btd
        rot = self.config.rot_dim
        for layer, block in enumerate(self._blocks):
            h = block.ln(x)
            qkv = block.attn.qkv_heads(h, self.config.n_heads)
            rotate_qk_(qkv, cos, sin, rot)
            q, k, v = heads_of(qkv)
            if cache is not None:
                if slot_index is None:
                    cache.k[layer, slots[0], :, :seq_len] = k[0]
                    cache.v[layer, slots[0], :, :seq_len] = v[0]
                else:
                    cache.k[layer, slot_index, :, :seq_len] = k
                    cache.v[layer, slot_index, :, :seq_len] = v
            attn = block.attn.merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask_tt))
            x = x + attn + block.mlp(h)
        return x

    def decode(
        self, embeds_b1d: torch.Tensor, cache: KVCache, positions_b: torch.Tensor, attend_len: int
    ) -> torch.Tensor:
        """One token for each of cache slots 0..B-1 at its own position -> hidden (B, 1, D).

        ``positions_b`` (B,) int64 on the model's device; ``attend_len`` = max(positions) + 1.
        Writes each row's key/value at its position, then attends over positions <= its own.
        """
        rows = embeds_b1d.shape[0]
        cos = self.rope_cos[positions_b][:, None]  # (B, 1, rot)
        sin = self.rope_sin[positions_b][:, None]
        slot_ids = torch.arange(rows, device=embeds_b1d.device)
        visible_b11l = (torch.arange(attend_len, device=embeds_b1d.device)[None, :] <= positions_b[:, None])[
            :, None, None, :
        ]
        x = embeds_b1d
        rot = self.config.rot_dim
        for layer, block in enumerate(self._blocks):
            h = block.ln(x)
            qkv = block.attn.qkv_heads(h, self.config.n_heads)
            rotate_qk_(qkv, cos, sin, rot)
            q, k, v = heads_of(qkv)
            cache.k[layer, slot_ids, :, positions_b] = k[:, :, 0]
            cache.v[layer, slot_ids, :, positions_b] = v[:, :, 0]
            keys = cache.k[layer, :rows, :, :attend_len]
            values = cache.v[layer, :rows, :, :attend_len]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible_b11l)
            x = x + block.attn.merge_heads(out) + block.mlp(h)
        return x
