"""Checkpoint directories: exact save/load round trip, loud failures naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.vtla.checkpoint import WEIGHTS_FILE, CheckpointError, save_checkpoint
from models.vtla.serving import VTLAPolicy, load_policy
from tests.models.vtla.conftest import force_torque, make_obs
from vtla_contracts.model_spec import ModelSpec


@pytest.fixture
def saved(tmp_path: Path, tiny_policy: VTLAPolicy) -> Path:
    return save_checkpoint(tiny_policy.model, tiny_policy._prompts.tokenizer, tmp_path / "ckpt")


def test_round_trip_is_exact(saved: Path, tiny_policy: VTLAPolicy) -> None:
    assert {p.name for p in saved.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json"}
    loaded = load_policy(ModelSpec(kind="vtla", path=str(saved)), "cpu", "float32")
    assert loaded.info.random_weights is False and loaded.describe()["checkpoint"] == str(saved)
    assert loaded.cfg == tiny_policy.cfg
    original = tiny_policy.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, original[key]), key
    batch = [
        make_obs(1, instruction="pick", force_torque=force_torque(1)),
        make_obs(2, force_torque=force_torque()),
    ]
    np.testing.assert_allclose(loaded.act(batch), tiny_policy.act(batch), rtol=1e-5, atol=1e-6)  # same weights


def test_missing_tensor_is_named(saved: Path) -> None:
    tensors = load_file(str(saved / WEIGHTS_FILE))
    del tensors["language.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(
        CheckpointError, match=r"missing tensor\(s\): language\.layers\.1\.mlp\.up_proj\.weight"
    ):
        load_policy(ModelSpec(kind="vtla", path=str(saved)), "cpu", "float32")


def test_misshaped_tensor_is_named(saved: Path) -> None:
    tensors = load_file(str(saved / WEIGHTS_FILE))
    tensors["action_query"] = torch.zeros(65)
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(
        CheckpointError, match=r"tensor action_query: shape \(65,\) in the file, model expects \(64,\)"
    ):
        load_policy(ModelSpec(kind="vtla", path=str(saved)), "cpu", "float32")


def test_unexpected_tensor_is_named(saved: Path) -> None:
    tensors = load_file(str(saved / WEIGHTS_FILE))
    tensors["lm_head.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): lm_head\.weight"):
        load_policy(ModelSpec(kind="vtla", path=str(saved)), "cpu", "float32")


def test_config_decides_the_architecture(saved: Path) -> None:
    data = json.loads((saved / "config.json").read_text())
    data["action"]["chunk_size"] = 2  # the head in the file was saved for chunk 4
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"action_head\.4\.weight: shape \(28, 128\)"):
        load_policy(ModelSpec(kind="vtla", path=str(saved)), "cpu", "float32")


def test_missing_directory_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_policy(ModelSpec(kind="vtla", path=str(tmp_path)), "cpu", "float32")
