"""Touch -> decoder tokens.

Two encoders (``TactileConfig.encoder``):

* ``cnn``: a small CNN for a tactile image and a linear map for a 6-axis force/torque vector,
  one token each; a learned "no touch" embedding stands in for an absent input.
* ``resnet18``: the predecessor's ``TactileTower`` (ResNet-18 trunk -> 512 -> Linear, GELU,
  Linear) plus its learned ``tactile_pos_embedding``; an absent image is a zero image. The
  ResNet keeps torchvision's parameter names so the converter can map old checkpoints 1:1.
"""

from __future__ import annotations

import torch
from torch import nn

from models.vtla.config import TactileConfig
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its fc layer: (B, 3, h, w) -> (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))  # adaptive avg pool to 1x1, flattened


class SmallTactileCNN(nn.Module):
    """(B, 3, h, w) -> (B, d): three strided convs, pooled to a 4x4 grid (contact location
    matters for touch, so the pooling keeps coarse position), then linear."""

    GRID = 4

    def __init__(self, channels: int, hidden_size: int) -> None:
        super().__init__()
        c = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(self.GRID)
        self.out = nn.Linear(2 * c * self.GRID * self.GRID, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pool(self.convs(x)).flatten(1))


class CnnTactileEncoder(nn.Module):
    """Tactile image and/or force-torque -> (B, k, d), k = number of enabled inputs."""

    force_torque_scale: torch.Tensor  # (6,) buffer

    def __init__(self, cfg: TactileConfig, hidden_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = SmallTactileCNN(cfg.cnn_channels, hidden_size) if cfg.image else None
        self.force_torque_proj = nn.Linear(FORCE_TORQUE_DIM, hidden_size) if cfg.force_torque else None
        self.no_touch = nn.Parameter(torch.randn(cfg.num_tokens, hidden_size) * 0.02)  # (k, d)
        self.register_buffer(
            "force_torque_scale", torch.tensor(cfg.force_torque_scale, dtype=torch.float32), persistent=False
        )

    def forward(
        self, batch_size: int, image: torch.Tensor | None, force_torque: torch.Tensor | None
    ) -> torch.Tensor:
        tokens: list[torch.Tensor] = []
        slot = 0
        if self.image_encoder is not None:
            if image is None:
                tokens.append(self.no_touch[slot].expand(batch_size, -1))
            else:
                tokens.append(self.image_encoder(image))
            slot += 1
        if self.force_torque_proj is not None:
            if force_torque is None:
                tokens.append(self.no_touch[slot].expand(batch_size, -1))
            else:
                scaled = force_torque * self.force_torque_scale.to(force_torque.dtype)
                tokens.append(self.force_torque_proj(scaled))
        return torch.stack(tokens, dim=1)  # (B, k, d)


class LegacyTactileEncoder(nn.Module):
    """The predecessor's tower: ResNet-18 -> 512 -> Linear, GELU, Linear -> one token + pos."""

    def __init__(self, cfg: TactileConfig, hidden_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = ResNet18Trunk()
        self.projector = nn.Sequential(
            nn.Linear(512, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )
        self.pos_embedding = nn.Parameter(torch.randn(hidden_size) * 0.02)  # (d,)

    def forward(
        self, batch_size: int, image: torch.Tensor | None, force_torque: torch.Tensor | None
    ) -> torch.Tensor:
        if image is None:  # the predecessor's "dummy tactile": a zero image
            size = self.cfg.image_size
            ref = self.pos_embedding
            image = torch.zeros(batch_size, 3, size, size, dtype=ref.dtype, device=ref.device)
        token = self.projector(self.trunk(image)) + self.pos_embedding  # (B, d)
        return token.unsqueeze(1)  # (B, 1, d)


def build_tactile_encoder(cfg: TactileConfig, hidden_size: int) -> nn.Module:
    if cfg.encoder == "resnet18":
        return LegacyTactileEncoder(cfg, hidden_size)
    return CnnTactileEncoder(cfg, hidden_size)
