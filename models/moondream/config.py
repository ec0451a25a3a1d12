"""Moondream 2 architecture numbers as frozen dataclasses, and the named presets.

Every hard number of the model lives here, so a ``tiny`` preset can run the real code paths in
seconds on CPU. The ``moondream2-2025-04-14`` numbers follow the official ``config.py`` of
revision 2025-04-14 (vikhyat/moondream, ``moondream/torch/config.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vtla_contracts.errors import ConfigError

REAL_PRESET = "moondream2-2025-04-14"
TINY_PRESET = "tiny"
REAL_REVISION = "2025-04-14"

# Prompt texts of the official templates. The real preset uses the official token ids below;
# presets with another tokenizer derive their ids by encoding these texts.
TEMPLATE_TEXTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "caption": MappingProxyType(
            {"short": "\n\nShort caption:", "normal": "\n\nCaption:", "long": "\n\nLong caption:"}
        ),
        "query": MappingProxyType({"prefix": "\n\nQuestion:", "suffix": "\n\nAnswer:"}),
        "detect": MappingProxyType({"prefix": "\n\nDetect:", "suffix": "\n\n"}),
        "point": MappingProxyType({"prefix": "\n\nPoint:", "suffix": "\n\n"}),
    }
)

# Official prompt token ids (GPT-2 BPE ids of the texts above), revision 2025-04-14.
OFFICIAL_TEMPLATES: dict[str, dict[str, tuple[int, ...]]] = {
    "caption": {
        "short": (198, 198, 16438, 8305, 25),
        "normal": (198, 198, 24334, 1159, 25),
        "long": (198, 198, 14617, 8305, 25),
    },
    "query": {"prefix": (198, 198, 24361, 25), "suffix": (198, 198, 33706, 25)},
    "detect": {"prefix": (198, 198, 47504, 25), "suffix": (628,)},
    "point": {"prefix": (198, 198, 12727, 25), "suffix": (628,)},
}


@dataclass(frozen=True)
class VisionConfig:
    enc_dim: int = 1152
    enc_patch_size: int = 14
    enc_n_layers: int = 27
    enc_ff_dim: int = 4304
    enc_n_heads: int = 16
    proj_inner_dim: int = 8192
    proj_out_dim: int = 2048
    crop_size: int = 378
    in_channels: int = 3
    max_crops: int = 12
    overlap_margin: int = 4  # in patches
    ln_eps: float = 1e-5

    @property
    def grid(self) -> int:
        """Patches per crop side (27 for the real model)."""
        return self.crop_size // self.enc_patch_size

    @property
    def tokens_per_crop(self) -> int:
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.enc_patch_size * self.enc_patch_size

    def validate(self) -> None:
        if self.crop_size % self.enc_patch_size:
            raise ConfigError("vision.crop_size must be a multiple of vision.enc_patch_size")
        if self.enc_dim % self.enc_n_heads:
            raise ConfigError("vision.enc_dim must be divisible by vision.enc_n_heads")
        if self.grid - 2 * self.overlap_margin < 1:
            raise ConfigError("vision.overlap_margin leaves no usable patches in a crop")
        if self.max_crops < 1:
            raise ConfigError("vision.max_crops must be >= 1")


@dataclass(frozen=True)
class TextConfig:
    dim: int = 2048
    ff_dim: int = 8192
    n_layers: int = 24
    n_heads: int = 32
    vocab_size: int = 51200
    max_context: int = 2048
    rot_dim: int = 32  # rotary on the first rot_dim dims of each head
    rope_theta: float = 10000.0
    ln_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        if self.dim % self.n_heads:
            raise ConfigError("text.dim must be divisible by text.n_heads")
        if self.rot_dim % 2 or not 0 < self.rot_dim <= self.head_dim:
            raise ConfigError("text.rot_dim must be even and within the head dimension")


@dataclass(frozen=True)
class RegionConfig:
    dim: int = 2048
    coord_feat_dim: int = 256
    coord_out_dim: int = 1024  # coordinate bins
    size_feat_dim: int = 512
    size_out_dim: int = 2048  # 2 x size bins (width, height)
    inner_dim: int = 8192
    # size bin b -> 2 ** ((b / (bins - 1)) * size_log2_range + size_log2_min)
    size_log2_min: float = -10.0
    size_log2_range: float = 10.0

    @property
    def size_bins(self) -> int:
        return self.size_out_dim // 2

    def validate(self) -> None:
        if self.coord_feat_dim % 2 or self.size_feat_dim % 2 or self.size_out_dim % 2:
            raise ConfigError("region feature and size output dims must be even")


def _official_templates() -> dict[str, dict[str, tuple[int, ...]]]:
    return {skill: dict(parts) for skill, parts in OFFICIAL_TEMPLATES.items()}


@dataclass(frozen=True)
class TokenizerConfig:
    bos_id: int = 50256
    eos_id: int = 50256
    # skill -> part -> token ids; caption parts are lengths, the others "prefix"/"suffix"
    templates: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=_official_templates)

    def validate(self, vocab_size: int) -> None:
        for name in ("caption", "query", "detect", "point"):
            if name not in self.templates:
                raise ConfigError(f"tokenizer.templates lacks {name!r}")
        for needed in ("short", "normal", "long"):
            if needed not in self.templates["caption"]:
                raise ConfigError(f"tokenizer.templates.caption lacks {needed!r}")
        for name in ("query", "detect", "point"):
            for part in ("prefix", "suffix"):
                if part not in self.templates[name]:
                    raise ConfigError(f"tokenizer.templates.{name} lacks {part!r}")
        ids = [self.bos_id, self.eos_id] + [t for p in self.templates.values() for v in p.values() for t in v]
        if any(not 0 <= t < vocab_size for t in ids):
            raise ConfigError("tokenizer ids must lie inside text.vocab_size")


@dataclass(frozen=True)
class MoondreamConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    region: RegionConfig = field(default_factory=RegionConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    revision: str = REAL_REVISION

    @property
    def prefix_attn_len(self) -> int:
        """BOS + one crop's worth of image tokens: the bidirectional prefix (730 for the real model)."""
        return 1 + self.vision.tokens_per_crop

    def validate(self) -> MoondreamConfig:
        self.vision.validate()
        self.text.validate()
        self.region.validate()
        self.tokenizer.validate(self.text.vocab_size)
        if self.vision.proj_out_dim != self.text.dim:
            raise ConfigError("vision.proj_out_dim must equal text.dim")
        if self.region.dim != self.text.dim:
            raise ConfigError("region.dim must equal text.dim")
        if self.prefix_attn_len >= self.text.max_context:
            raise ConfigError("text.max_context leaves no room after the image tokens")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tokenizer"]["templates"] = {
            skill: {part: list(ids) for part, ids in parts.items()}
            for skill, parts in self.tokenizer.templates.items()
        }
        return out


def tiny_config() -> MoondreamConfig:
    """A few-layer model with every code path of the real one; tokenizer ids are set by the loader."""
    return MoondreamConfig(
        vision=VisionConfig(
            enc_dim=32,
            enc_patch_size=8,
            enc_n_layers=2,
            enc_ff_dim=64,
            enc_n_heads=2,
            proj_inner_dim=128,
            proj_out_dim=64,
            crop_size=64,
            max_crops=12,
            overlap_margin=2,
        ),
        text=TextConfig(
            dim=64, ff_dim=256, n_layers=2, n_heads=4, vocab_size=512, max_context=256, rot_dim=8
        ),
        region=RegionConfig(
            dim=64, coord_feat_dim=32, coord_out_dim=64, size_feat_dim=32, size_out_dim=128, inner_dim=128
        ),
        tokenizer=TokenizerConfig(bos_id=0, eos_id=0, templates={}),
        revision=TINY_PRESET,
    )


PRESETS = (REAL_PRESET, TINY_PRESET)


def preset_config(name: str) -> MoondreamConfig:
    if name == REAL_PRESET:
        return MoondreamConfig()
    if name == TINY_PRESET:
        return tiny_config()
    raise ConfigError(f"unknown moondream preset {name!r}; known: {', '.join(PRESETS)}")


def _replace_section(section: Any, overrides: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {where} config keys: {', '.join(unknown)}")
    return dataclasses.replace(section, **overrides)


def apply_overrides(config: MoondreamConfig, overrides: Mapping[str, Any]) -> MoondreamConfig:
    """Apply a ``config.json``-style mapping ({"text": {...}, "vision": {...}, ...}) to a config."""
    vision = _replace_section(config.vision, overrides.get("vision", {}), "vision")
    text = _replace_section(config.text, overrides.get("text", {}), "text")
    region = _replace_section(config.region, overrides.get("region", {}), "region")
    tok_over = dict(overrides.get("tokenizer", {}))
    if "templates" in tok_over:
        tok_over["templates"] = {
            str(skill): {str(part): tuple(int(t) for t in ids) for part, ids in parts.items()}
            for skill, parts in tok_over["templates"].items()
        }
    tokenizer = _replace_section(config.tokenizer, tok_over, "tokenizer")
    revision = str(overrides.get("revision", config.revision))
    return MoondreamConfig(vision=vision, text=text, region=region, tokenizer=tokenizer, revision=revision)
