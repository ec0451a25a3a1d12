"""FLOPs, bytes and kernels of the real models' phases, counted from their architecture configs.

Conventions (stated once, used everywhere):

* a GEMM of ``m`` tokens by a ``k x n`` weight is ``2 m k n`` FLOPs; attention of ``t`` query
  tokens over ``c`` context positions is ``4 t c d`` FLOPs (scores + weighted sum, full context,
  no causal saving);
* weights are bf16 (2 bytes/parameter) and read once per phase, whatever the batch;
  activations move ``activation_rw_per_layer`` times ``tokens x d`` bf16 values per layer;
  a decode step also reads the KV cache of every context position (K and V, every layer);
* layer norms, biases, rotary and the small heads (action MLP, tactile CNN, region encoders)
  are left out of the FLOP count (< 1 % at these shapes) but their kernels are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.moondream.config import MoondreamConfig
from models.simulated.device import DeviceWork
from models.vtla.config import VTLAConfig

BYTES_PER_VALUE = 2  # bf16


@dataclass(frozen=True)
class KernelCounts:
    """Kernels launched per transformer layer and per phase outside the layers (eager PyTorch)."""

    per_vision_layer: int
    per_text_layer: int
    per_phase_other: int  # embeddings, projector, heads, sampling, host<->device copies


@dataclass(frozen=True)
class Layer:
    """One transformer layer's matrices: d model, kv width, ff width, number of MLP matrices."""

    d: int
    kv_dim: int
    ff: int
    mlp_mats: int  # 2 (fc1, fc2) or 3 (gate, up, down)

    @property
    def params(self) -> int:
        return 2 * self.d * self.d + 2 * self.d * self.kv_dim + self.mlp_mats * self.d * self.ff

    def work(self, tokens: int, context: int, rw_per_layer: float, kernels: int) -> DeviceWork:
        """``tokens`` queries attending over ``context`` positions each (weights not included)."""
        flops = 2.0 * self.params * tokens + 4.0 * tokens * context * self.d
        return DeviceWork(flops, rw_per_layer * tokens * self.d * BYTES_PER_VALUE, kernels)


def _weights(params: float) -> DeviceWork:
    return DeviceWork(0.0, params * BYTES_PER_VALUE, 0)


# ---------------------------------------------------------------- VTLA (SigLIP + projector + Qwen2)


def vtla_layers(cfg: VTLAConfig) -> tuple[Layer, Layer]:
    v, t = cfg.vision, cfg.text
    head_dim = t.hidden_size // t.num_heads
    vision = Layer(v.hidden_size, v.hidden_size, v.intermediate_size, 2)
    text = Layer(t.hidden_size, t.num_kv_heads * head_dim, t.intermediate_size, 3)
    return vision, text


def vtla_sequence_tokens(cfg: VTLAConfig, text_tokens: int) -> int:
    """Decoder sequence of one observation: [text][image][tactile][action query]."""
    return text_tokens + cfg.num_image_tokens + cfg.tactile.num_tokens + 1


def vtla_parameters(cfg: VTLAConfig) -> float:
    vision, text = vtla_layers(cfg)
    v = cfg.vision
    patch = 3 * v.patch_size * v.patch_size * v.hidden_size
    projector = v.hidden_size * text.d + text.d * text.d
    return vision.params * v.num_layers + patch + projector + text.params * cfg.text.num_layers


def vtla_forward(
    cfg: VTLAConfig, batch: int, text_tokens: int, rw_per_layer: float, kernels: KernelCounts
) -> DeviceWork:
    """One batched ``act`` forward: vision tower per camera image, projector, decoder over the sequence."""
    vision, text = vtla_layers(cfg)
    v = cfg.vision
    image_tokens = batch * cfg.num_image_tokens  # every camera of every row
    per_image = v.num_tokens
    patch_flops = 2.0 * image_tokens * 3 * v.patch_size * v.patch_size * v.hidden_size
    projector_flops = 2.0 * image_tokens * (v.hidden_size * text.d + text.d * text.d)
    seq = vtla_sequence_tokens(cfg, text_tokens)
    work = DeviceWork(patch_flops + projector_flops, 0.0, kernels.per_phase_other)
    work += _weights(vtla_parameters(cfg))
    for _ in range(v.num_layers):
        work += vision.work(image_tokens, per_image, rw_per_layer, kernels.per_vision_layer)
    for _ in range(cfg.text.num_layers):
        work += text.work(batch * seq, seq, rw_per_layer, kernels.per_text_layer)
    return work


# ---------------------------------------------------------------- Moondream 2 (SigLIP-like + Phi)


def moondream_layers(cfg: MoondreamConfig) -> tuple[Layer, Layer]:
    v, t = cfg.vision, cfg.text
    return Layer(v.enc_dim, v.enc_dim, v.enc_ff_dim, 2), Layer(t.dim, t.dim, t.ff_dim, 2)


def moondream_vision_parameters(cfg: MoondreamConfig) -> float:
    vision, _ = moondream_layers(cfg)
    v = cfg.vision
    return vision.params * v.enc_n_layers + v.patch_dim * v.enc_dim


def moondream_text_parameters(cfg: MoondreamConfig) -> float:
    _, text = moondream_layers(cfg)
    return text.params * cfg.text.n_layers + cfg.text.dim * cfg.text.vocab_size  # + LM head


def encode_crops(cfg: MoondreamConfig, crops: int, rw_per_layer: float, kernels: KernelCounts) -> DeviceWork:
    """Vision encoder over ``crops`` crops of ``tokens_per_crop`` patches each (one admission unit)."""
    vision, _ = moondream_layers(cfg)
    v = cfg.vision
    tokens = crops * v.tokens_per_crop
    work = DeviceWork(2.0 * tokens * v.patch_dim * v.enc_dim, 0.0, kernels.per_phase_other)
    work += _weights(moondream_vision_parameters(cfg))
    for _ in range(v.enc_n_layers):
        work += vision.work(tokens, v.tokens_per_crop, rw_per_layer, kernels.per_vision_layer)
    return work


def prefill(
    cfg: MoondreamConfig, tokens: int, rw_per_layer: float, kernels: KernelCounts, context: int | None = None
) -> DeviceWork:
    """Projection of the (global + stitched local) features, then the decoder over BOS + image + prompt.

    ``context`` (default ``tokens``): positions each token attends over, for one chunk of a chunked
    prefill (the projection is then counted again: an upper bound)."""
    _, text = moondream_layers(cfg)
    v, t = cfg.vision, cfg.text
    proj_params = 2 * v.enc_dim * v.proj_inner_dim + v.proj_inner_dim * v.proj_out_dim
    work = DeviceWork(2.0 * v.tokens_per_crop * proj_params, 0.0, kernels.per_phase_other)
    work += _weights(proj_params + moondream_text_parameters(cfg))
    work += DeviceWork(2.0 * t.dim * t.vocab_size, 0.0, 0)  # logits of the last position
    kv_write = tokens * 2 * t.dim * BYTES_PER_VALUE
    for _ in range(t.n_layers):
        work += text.work(tokens, tokens if context is None else context, rw_per_layer, kernels.per_text_layer)
        work += DeviceWork(0.0, kv_write, 0)
    return work


def decode_step(
    cfg: MoondreamConfig, contexts: Sequence[int], rw_per_layer: float, kernels: KernelCounts
) -> DeviceWork:
    """One decode step of ``len(contexts)`` sequences, sequence i attending over ``contexts[i]`` positions."""
    _, text = moondream_layers(cfg)
    t = cfg.text
    rows = len(contexts)
    total_context = float(sum(contexts))
    work = DeviceWork(2.0 * rows * t.dim * t.vocab_size, 0.0, kernels.per_phase_other)
    work += _weights(moondream_text_parameters(cfg))
    kv_read = total_context * 2 * t.dim * BYTES_PER_VALUE
    for _ in range(t.n_layers):
        layer = text.work(rows, 0, rw_per_layer, kernels.per_text_layer)
        work += layer + DeviceWork(4.0 * total_context * t.dim, kv_read, 0)
    return work
