"""Moondream's memory budget: weights, the multi-slot KV cache, the largest activation (estimate)."""

from __future__ import annotations

from models.memory_budget import MemoryBudget
from models.moondream.config import MoondreamConfig

FLOAT32_BYTES = 4


def moondream_budget(
    config: MoondreamConfig,
    parameters: int,
    dtype_bytes: int,
    slots: int,
    context: int,
    encode_chunk_crops: int,
    prefill_tokens: int | None = None,
) -> MemoryBudget:
    """``prefill_tokens``: most positions of one (shared) prefill forward, default ``context``."""
    text, vision = config.text, config.vision
    kv = 2 * text.n_layers * slots * text.n_heads * context * text.head_dim * dtype_bytes
    crops = min(encode_chunk_crops, 1 + vision.max_crops)
    vision_mlp = crops * vision.tokens_per_crop * vision.enc_ff_dim * dtype_bytes
    prefill_len = max(context, prefill_tokens or context)  # one prefill of up to this many positions
    prefill_mlp = prefill_len * text.ff_dim * dtype_bytes
    prefill_scores = text.n_heads * prefill_len * prefill_len * dtype_bytes  # if SDPA materialises them
    decode = slots * text.vocab_size * FLOAT32_BYTES * 3  # logits, noise, sorted probabilities
    largest = 2 * max(vision_mlp, prefill_mlp + prefill_scores, decode)
    return MemoryBudget(parameters * dtype_bytes, kv, largest)
