"""convert-vtla: a tiny checkpoint written in the predecessor's format, converted and compared
with the predecessor's forward pass (re-implemented here from transformers parts)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import Qwen2Model, SiglipVisionModel

from models.vtla.config import VTLAConfig
from models.vtla.convert import ConversionError, convert, main
from models.vtla.model import qwen2_config, siglip_config
from models.vtla.presets import tiny
from models.vtla.serving import VTLAPolicy, load_policy
from models.vtla.tactile import ResNet18Trunk
from models.vtla.text import build_byte_tokenizer
from tests.models.vtla.conftest import make_image, make_obs
from vtla_contracts.model_spec import ModelSpec

MEAN = np.array([-5.6e-06, 1.7e-05, 4.0e-05, -5.5e-05, -2.4e-04, -9.5e-05, 0.1132])
STD = np.array([0.005, 0.0066, 0.0068, 0.0136, 0.0172, 0.0182, 0.021])
HEAD = (48, 24)  # the old ActionHead: d -> 512 -> 256 -> 7, scaled down
BACKBONE = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


class OldModel(nn.Module):
    """The predecessor's modules with their attribute names (the test's reference)."""

    def __init__(self, base: VTLAConfig) -> None:
        super().__init__()
        d = base.text.hidden_size
        # Bunny kept SigLIP's last layer in the weights but read the penultimate output.
        self.vision = SiglipVisionModel(
            siglip_config(dataclasses.replace(base.vision, num_layers=base.vision.num_layers + 1))
        )
        self.language = Qwen2Model(qwen2_config(base.text))
        self.projector = nn.Sequential(nn.Linear(base.vision.hidden_size, d), nn.GELU(), nn.Linear(d, d))
        self.trunk = ResNet18Trunk()
        self.tactile_projector = nn.Sequential(nn.Linear(512, d), nn.GELU(), nn.Linear(d, d))
        self.tactile_pos = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.head = nn.Sequential(
            nn.Linear(d, HEAD[0]), nn.GELU(), nn.Linear(HEAD[0], HEAD[1]), nn.GELU(), nn.Linear(HEAD[1], 7)
        )
        with torch.no_grad():  # make BatchNorm's running statistics matter
            for module in self.trunk.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.1, 0.1)

    def state_in_old_names(self, head_prefix: str) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for k, v in self.vision.state_dict().items():
            state["model.vision_tower.vision_tower.vision_model." + k] = v
        for k, v in self.language.state_dict().items():
            state["model." + k] = v
        for k, v in self.projector.state_dict().items():
            state["model.mm_projector." + k] = v
        for k, v in self.trunk.state_dict().items():
            state["model.tactile_tower.encoder.resnet." + k] = v
            child, _, rest = k.partition(".")
            state[f"model.tactile_tower.encoder.backbone.{BACKBONE[child]}.{rest}"] = v
        state["model.tactile_tower.encoder.resnet.fc.weight"] = torch.zeros(1000, 512)
        state["model.tactile_tower.encoder.resnet.fc.bias"] = torch.zeros(1000)
        for k, v in self.tactile_projector.state_dict().items():
            state["model.tactile_tower.projector.projector." + k] = v
        state["model.tactile_pos_embedding"] = self.tactile_pos.detach()
        for k, v in self.head.state_dict().items():
            state[head_prefix + k] = v
        state["lm_head.weight"] = torch.zeros(
            self.language.config.vocab_size, self.language.config.hidden_size
        )
        return {k: v.detach().clone() for k, v in state.items()}

    @torch.no_grad()
    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """The old service: [image][dummy tactile][instruction], head on the last image token."""
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        pixels = (pixels - 0.5) / 0.5
        hidden = self.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        image_tokens = self.projector(hidden)  # (1, N, d)
        tactile = self.tactile_projector(self.trunk(torch.zeros(1, 3, 128, 128))) + self.tactile_pos
        ids = torch.tensor([build_byte_tokenizer().encode(instruction, add_special_tokens=False).ids])
        sequence = torch.cat([image_tokens, tactile, self.language.embed_tokens(ids)], dim=1)
        out = self.language(inputs_embeds=sequence, use_cache=False).last_hidden_state
        normalized = self.head(out[:, image_tokens.shape[1] - 1]).numpy()[0]
        action = normalized * STD + MEAN
        action[6] = np.clip(action[6], 0, 1)
        return action


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> tuple[OldModel, Path, Path, Path]:
    torch.manual_seed(1)
    model = OldModel(tiny()).eval()
    root = tmp_path_factory.mktemp("old")
    source = root / "checkpoint_step70000.pt"
    torch.save(
        {"model_state_dict": model.state_in_old_names("action_head.mlp."), "global_step": 70000}, source
    )
    stats = root / "action_mean_std.pkl"
    with open(stats, "wb") as f:
        pickle.dump({"mean": MEAN.astype(np.float32), "std": STD.astype(np.float32)}, f)
    base = root / "base.json"
    base.write_text(json.dumps(tiny().to_dict()))
    return model, source, stats, base


def converted(old: tuple[OldModel, Path, Path, Path], out: Path, readout: str) -> VTLAPolicy:
    _, source, stats, base = old
    argv = [
        str(source),
        "--stats",
        str(stats),
        "--base-config",
        str(base),
        "--out",
        str(out),
        "--readout",
        readout,
    ]
    assert main(argv) == 0
    return load_policy(ModelSpec(kind="vtla", path=str(out)), "cpu", "float32")


def test_legacy_conversion_reproduces_the_old_outputs(old: tuple, tmp_path: Path) -> None:
    policy = converted(old, tmp_path / "legacy", "legacy")
    assert policy.cfg.action.readout == "legacy" and policy.cfg.action.head_hidden == HEAD
    assert policy.stats()["mean"] == pytest.approx(list(MEAN)) and policy.stats()["std"] == pytest.approx(
        list(STD)
    )
    model: OldModel = old[0]
    for seed, instruction in [(0, "pick up the red cube"), (1, "What action should the robot take?")]:
        image = make_image(64, 64, seed=seed)  # the tower's own size: no resize on either side
        want = model.predict(image, instruction)
        got = policy.act([make_obs(seed, size=(64, 64), instruction=instruction)])[0, 0]
        np.testing.assert_allclose((got - want) / STD, 0, atol=1e-4)


def test_conversion_keeps_every_weight(old: tuple, tmp_path: Path) -> None:
    policy = converted(old, tmp_path / "legacy", "legacy")
    model: OldModel = old[0]
    new = policy.model.state_dict()
    assert torch.equal(new["tactile.trunk.layer3.1.bn2.running_var"], model.trunk.layer3[1].bn2.running_var)
    assert torch.equal(new["tactile.pos_embedding"], model.tactile_pos.reshape(-1))
    assert torch.equal(
        new["vision.encoder.layers.1.mlp.fc2.weight"], model.vision.encoder.layers[1].mlp.fc2.weight
    )
    assert "vision.encoder.layers.2.mlp.fc2.weight" not in new  # the unused last layer is dropped
    assert torch.equal(new["action_head.2.bias"], model.head[2].bias)


def test_query_readout_conversion_reads_instruction_and_touch(old: tuple, tmp_path: Path) -> None:
    policy = converted(old, tmp_path / "query", "query")
    assert policy.cfg.action.readout == "query"
    a = policy.act([make_obs(0, instruction="pick")])
    b = policy.act([make_obs(0, instruction="place the cube on the plate")])
    c = policy.act([make_obs(0, instruction="pick", tactile_image=make_image(128, 128, seed=3))])
    assert np.abs((a - b) / STD).max() > 1e-4
    assert np.abs((a - c) / STD).max() > 1e-4


def test_head_under_model_prefix_is_accepted(old: tuple, tmp_path: Path) -> None:
    model, _, stats, base = old
    source = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": model.state_in_old_names("model.action_head.mlp.")}, source)
    assert (
        main([str(source), "--stats", str(stats), "--base-config", str(base), "--out", str(tmp_path / "o")])
        == 0
    )


def test_unknown_key_fails_naming_it(old: tuple, tmp_path: Path) -> None:
    model, _, stats, _ = old
    state = model.state_in_old_names("action_head.mlp.")
    state["model.mystery_tower.weight"] = torch.zeros(3)
    source = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": state}, source)
    with pytest.raises(
        ConversionError, match=r"unknown key in the source checkpoint: model\.mystery_tower\.weight"
    ):
        convert(source, stats, tiny(), tmp_path / "out")


def test_shape_mismatch_with_the_base_config_fails_naming_the_key(old: tuple, tmp_path: Path) -> None:
    _, source, stats, _ = old
    wider = dataclasses.replace(tiny(), text=dataclasses.replace(tiny().text, intermediate_size=96))
    with pytest.raises(
        ConversionError, match=r"language\.layers\.0\.mlp\.up_proj\.weight: shape \(128, 64\)"
    ):
        convert(source, stats, wider, tmp_path / "out")


def test_pickled_objects_need_allow_pickle(old: tuple, tmp_path: Path) -> None:
    model, _, stats, base = old
    source = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": model.state_in_old_names("action_head.mlp."), "args": _Args()}, source)
    argv = [str(source), "--stats", str(stats), "--base-config", str(base), "--out", str(tmp_path / "o")]
    with pytest.raises(ConversionError, match="--allow-pickle"):
        convert(source, stats, tiny(), tmp_path / "o")
    assert main(argv) == 1
    assert main([*argv, "--allow-pickle"]) == 0


class _Args:
    """Stands in for the argparse.Namespace a trainer may pickle into its checkpoint."""

    lr = 1e-4
