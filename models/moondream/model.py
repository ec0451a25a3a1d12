"""The whole Moondream 2 network: vision encoder, text decoder, region head.

``MoondreamModel().state_dict()`` keys equal the official checkpoint's keys without their
``model.`` prefix, so loading is a checked key-by-key copy (see :mod:`models.moondream.weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.moondream.config import MoondreamConfig
from models.moondream.region import RegionHead
from models.moondream.text import TextModel
from models.moondream.vision import VisionModel


class MoondreamModel(nn.Module):
    def __init__(self, config: MoondreamConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionModel(config.vision)
        self.text = TextModel(config.text, prefix_len=config.prefix_attn_len)
        self.region = RegionHead(config.region)

    @property
    def device(self) -> torch.device:
        return self.text.wte.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text.wte.dtype

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_random_weights(model: MoondreamModel, seed: int) -> None:
    """Deterministic random weights: N(0, 0.02) matrices, zero biases, unit LayerNorms.

    The Fourier frequencies get N(0, 1) so coordinates in [0, 1] spread over several periods.
    """
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            shape, dtype = param.shape, torch.float32
            if name.endswith("_features"):
                values = torch.randn(shape, generator=gen, device=device, dtype=dtype)
            elif ".ln" in name or "post_ln" in name:
                fill = 1.0 if name.endswith("weight") else 0.0
                values = torch.full(shape, fill, device=device, dtype=dtype)
            elif name.endswith("bias"):
                values = torch.zeros(shape, device=device, dtype=dtype)
            else:
                values = torch.randn(shape, generator=gen, device=device, dtype=dtype) * 0.02
            param.copy_(values)
