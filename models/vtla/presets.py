"""Named VTLA configurations: ``tiny`` (tests, the default) and ``nano-2b`` (the real shapes)."""

from __future__ import annotations

import dataclasses

from models.vtla.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ActionConfig,
    PromptConfig,
    TactileConfig,
    VTLAConfig,
    VtlaTextConfig,
    VtlaVisionConfig,
)

# The tiny preset's tokenizer is byte-level (256 symbols) plus these special tokens.
TINY_VOCAB_SIZE = 264


def tiny() -> VTLAConfig:
    """A few hundred thousand parameters: loads in well under a second on CPU."""
    return VTLAConfig(
        name="tiny",
        vision=VtlaVisionConfig(
            hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, image_size=64, patch_size=16
        ),
        text=VtlaTextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            vocab_size=TINY_VOCAB_SIZE,
            rope_theta=1e6,
            max_position_embeddings=1024,
        ),
        tactile=TactileConfig(encoder="cnn", image=True, force_torque=True, image_size=32, cnn_channels=16),
        action=ActionConfig(chunk_size=4, head_hidden=(128, 128)),
        prompt=PromptConfig(max_text_tokens=256),
    )


def nano_2b() -> VTLAConfig:
    """The predecessor's shapes: SigLIP-so400m/14 at 384 px (26 layers used) + Qwen1.5-1.8B."""
    return VTLAConfig(
        name="nano-2b",
        vision=VtlaVisionConfig(),
        text=VtlaTextConfig(),
        tactile=TactileConfig(encoder="cnn", image=True, force_torque=True, image_size=128, cnn_channels=32),
        action=ActionConfig(chunk_size=1, head_hidden=(512, 512)),
        prompt=PromptConfig(max_text_tokens=256),
    )


PRESETS = {"tiny": tiny, "nano-2b": nano_2b}


def preset_config(name: str) -> VTLAConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown VTLA preset {name!r}; known: {sorted(PRESETS)}") from None


def legacy_variant(base: VTLAConfig, head_hidden: tuple[int, ...]) -> VTLAConfig:
    """``base`` with the predecessor's tactile tower, prompt and last-image-token readout.

    The predecessor fed ``[image][tactile][instruction]`` (IMAGE_TOKEN_INDEX then the
    instruction's tokens, no system prompt) and read the last image token.
    """
    return dataclasses.replace(
        base,
        name=f"{base.name}-legacy",
        tactile=TactileConfig(
            encoder="resnet18",
            image=True,
            force_torque=False,
            image_size=128,
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
        ),
        action=dataclasses.replace(base.action, chunk_size=1, head_hidden=head_hidden, readout="legacy"),
        prompt=dataclasses.replace(base.prompt, template="<image>{instruction}"),
    )
