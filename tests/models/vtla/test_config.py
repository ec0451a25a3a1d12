"""Config: JSON round trip, strict field names, consistency checks, presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from models.vtla.config import ConfigError, Normalization, PromptConfig, VTLAConfig
from models.vtla.presets import legacy_variant, nano_2b, preset_config, tiny


@pytest.mark.parametrize("name", ["tiny", "nano-2b"])
def test_round_trip_through_json(name: str) -> None:
    cfg = preset_config(name)
    again = VTLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_unknown_field_is_rejected_with_its_path() -> None:
    data = tiny().to_dict()
    data["action"]["chunk"] = 4
    with pytest.raises(ConfigError, match=r"config\.action: unknown field\(s\) \['chunk'\]"):
        VTLAConfig.from_dict(data)


def test_wrong_format_is_rejected() -> None:
    data = tiny().to_dict()
    data["format"] = "something-else/9"
    with pytest.raises(ConfigError, match="format"):
        VTLAConfig.from_dict(data)


def test_nano_2b_has_the_predecessor_shapes() -> None:
    cfg = nano_2b()
    assert cfg.vision.num_tokens == 729 and cfg.vision.num_layers == 26 and cfg.vision.hidden_size == 1152
    t = cfg.text
    assert (t.hidden_size, t.num_layers, t.num_heads, t.intermediate_size, t.vocab_size) == (
        2048,
        24,
        16,
        5504,
        151936,
    )
    assert (t.rope_theta, t.rms_norm_eps) == (1e6, 1e-6)


def test_quantile_normalization_needs_its_fields() -> None:
    with pytest.raises(ConfigError, match="quantile normalization needs"):
        Normalization(type="quantile").check(7)
    with pytest.raises(ConfigError, match="7 values"):
        Normalization(type="quantile", q01=(0.0,) * 6, q99=(1.0,) * 7, mask=(True,) * 7).check(7)


def test_prompt_template_is_checked_and_split() -> None:
    assert PromptConfig(template="A {instruction} B<image>C").split() == ("A {instruction} B", "C")
    assert PromptConfig(template="{instruction}").split() == ("{instruction}", "")
    with pytest.raises(ConfigError, match=r"one \{instruction\}"):
        dataclasses.replace(tiny(), prompt=PromptConfig(template="no field <image>"))


def test_legacy_variant_is_the_predecessor_layout() -> None:
    cfg = legacy_variant(nano_2b(), (512, 256))
    assert cfg.action.readout == "legacy" and cfg.action.head_hidden == (512, 256)
    assert cfg.prompt.split() == ("", "{instruction}")  # [image][tactile][instruction]
    assert cfg.tactile.encoder == "resnet18" and cfg.tactile.num_tokens == 1 and not cfg.tactile.force_torque


def test_nano_2b_builds_with_the_expected_parameter_count() -> None:
    """Built on the meta device: real shapes, no memory; Qwen1.5-1.8B minus its LM head."""
    import torch

    from models.vtla.model import VTLAModel, count_parameters

    with torch.device("meta"):
        model = VTLAModel(nano_2b())
    assert count_parameters(model.language) == 1_525_663_744  # 1.84B with the 311M lm_head
    assert 390e6 < count_parameters(model.vision) < 410e6  # so400m with 26 of its 27 layers
    assert 1.90e9 < count_parameters(model) < 1.96e9
    assert model.num_middle_tokens == 729 + 2
