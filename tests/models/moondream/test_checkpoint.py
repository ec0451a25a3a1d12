"""Loading a checkpoint written the official way: fp16 safetensors under ``model.*`` key names."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from models.interfaces import GenerationSettings
from models.moondream.config import preset_config
from models.moondream.model import MoondreamModel, init_random_weights
from models.moondream.serving import load_generator
from models.moondream.weights import CheckpointError
from tests.models.moondream.conftest import request, run_to_end
from vtla_contracts.model_spec import ModelSpec

OFFICIAL_KEYS_SAMPLE = (
    "model.text.wte",  # no ".weight" suffix upstream
    "model.text.blocks.0.ln.weight",
    "model.text.blocks.0.attn.qkv.weight",
    "model.text.blocks.0.attn.qkv.bias",
    "model.text.blocks.1.attn.proj.bias",
    "model.text.blocks.1.mlp.fc2.weight",
    "model.text.post_ln.bias",
    "model.text.lm_head.weight",
    "model.vision.patch_emb.weight",
    "model.vision.pos_emb",
    "model.vision.blocks.0.ln1.weight",
    "model.vision.blocks.1.ln2.bias",
    "model.vision.blocks.1.attn.qkv.weight",
    "model.vision.post_ln.weight",
    "model.vision.proj_mlp.fc1.weight",
    "model.vision.proj_mlp.fc2.bias",
    "model.region.coord_features",
    "model.region.coord_encoder.weight",
    "model.region.coord_decoder.fc1.weight",
    "model.region.size_features",
    "model.region.size_encoder.bias",
    "model.region.size_decoder.fc2.weight",
)


def build_test_tokenizer() -> Tokenizer:
    """A byte-level BPE of the tests' own (GPT-2 style, with <|endoftext|>)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        ["a cat on a mat", "Caption: two dogs", "Question: where? Answer: here"], trainer
    )
    return tokenizer


def official_tensors(seed: int = 7) -> dict[str, torch.Tensor]:
    model = MoondreamModel(preset_config("tiny"))
    init_random_weights(model, seed)
    return {
        "model." + name: p.detach().to(torch.float16).contiguous() for name, p in model.named_parameters()
    }


def write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: Mapping[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    build_test_tokenizer().save(str(directory / "tokenizer.json"))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_official_layout_loads_casts_and_generates(tmp_path: Path) -> None:
    tensors = official_tensors()
    assert set(OFFICIAL_KEYS_SAMPLE) <= set(tensors)
    directory = write_checkpoint(tmp_path / "ckpt", tensors, {"preset": "tiny"})
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("model.text.wte").dtype == torch.float16

    generator = load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")
    assert generator.info.random_weights is False and generator.describe()["random_weights"] is False
    assert generator.info.source == str(directory)
    params = dict(generator.model.named_parameters())
    for key, stored in tensors.items():
        loaded = params[key.removeprefix("model.")]
        assert loaded.dtype == torch.float32
        torch.testing.assert_close(loaded, stored.float(), rtol=0, atol=0)
    settings = GenerationSettings(max_tokens=5)
    events = generator.admit(request(1, "caption", settings=settings)) + run_to_end(generator)
    assert events[-1].result is not None and events[-1].result["finish_reason"] in ("stop", "length")
    events = generator.admit(request(2, "detect", settings=settings)) + run_to_end(generator)
    assert events[-1].result is not None and "objects" in events[-1].result


def test_explicit_templates_in_config_json_are_used(tmp_path: Path) -> None:
    config = {
        "preset": "tiny",
        "tokenizer": {
            "bos_id": 0,
            "eos_id": 0,
            "templates": {
                "caption": {"short": [5, 6], "normal": [7], "long": [8, 9, 10]},
                "query": {"prefix": [11], "suffix": [12]},
                "detect": {"prefix": [13], "suffix": [14]},
                "point": {"prefix": [15], "suffix": [16]},
            },
        },
    }
    directory = write_checkpoint(tmp_path / "ckpt", official_tensors(), config)
    generator = load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")
    assert generator.prompt_ids(request(1, "caption", length="long")) == [8, 9, 10]
    detect_ids = generator.prompt_ids(request(1, "detect", text="dog"))
    assert detect_ids[0] == 13 and detect_ids[-1] == 14 and len(detect_ids) > 2


def test_missing_key_is_named(tmp_path: Path) -> None:
    tensors = official_tensors()
    del tensors["model.text.blocks.1.attn.proj.bias"]
    directory = write_checkpoint(tmp_path / "ckpt", tensors, {"preset": "tiny"})
    with pytest.raises(CheckpointError, match=r"missing key 'model\.text\.blocks\.1\.attn\.proj\.bias'"):
        load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")


def test_misshaped_key_is_named(tmp_path: Path) -> None:
    tensors = official_tensors()
    tensors["model.text.wte"] = torch.zeros(10, 64, dtype=torch.float16)
    directory = write_checkpoint(tmp_path / "ckpt", tensors, {"preset": "tiny"})
    with pytest.raises(
        CheckpointError, match=r"'model\.text\.wte' has shape \[10, 64\], expected \[512, 64\]"
    ):
        load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")


def test_directory_without_project_config_means_the_real_preset(tmp_path: Path) -> None:
    # official files only (a Hugging Face config.json is ignored): tiny tensors do not fit the real shapes
    directory = write_checkpoint(tmp_path / "ckpt", official_tensors(), {"model_type": "moondream1"})
    with pytest.raises(CheckpointError, match="expected"):
        load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")


def test_missing_tokenizer_file_is_named(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "ckpt", official_tensors(), {"preset": "tiny"})
    (directory / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_generator(ModelSpec(kind="moondream", path=str(directory)), "cpu", "float32")


def test_hub_download_without_huggingface_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(RuntimeError, match="huggingface_hub"):
        load_generator(ModelSpec(kind="moondream", hub_download=True), "cpu", "float32")


def test_hub_download_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls: list[dict[str, object]] = []

    def offline(**kwargs: object) -> str:
        calls.append(kwargs)
        raise OSError("network unreachable")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=offline))
    with pytest.raises(RuntimeError, match="offline"):
        load_generator(ModelSpec(kind="moondream", hub_download=True), "cpu", "float32")
    assert calls[0]["repo_id"] == "vikhyatk/moondream2" and calls[0]["revision"] == "2025-04-14"


def test_default_tiny_preset_is_random_and_says_so() -> None:
    generator = load_generator(ModelSpec(kind="moondream"), "cpu", "float32")
    assert generator.info.random_weights is True and generator.describe()["revision"] == "tiny"
    assert generator.describe()["max_sequences"] == 8
    options = {"max_sequences": 3, "max_crops": 2, "context": 128}
    small = load_generator(ModelSpec(kind="moondream", options=options), "cpu", "float32")
    assert small.free_slots() == 3 and small.cache.context == 128
    assert small.config.vision.max_crops == 2


def test_real_preset_shapes_match_the_official_model() -> None:
    with torch.device("meta"):
        model = MoondreamModel(preset_config("moondream2-2025-04-14"))
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["text.wte"] == (51200, 2048)
    assert shapes["text.blocks.23.attn.qkv.weight"] == (6144, 2048)
    assert shapes["text.blocks.0.mlp.fc1.weight"] == (8192, 2048)
    assert shapes["vision.patch_emb.weight"] == (1152, 588)
    assert shapes["vision.pos_emb"] == (1, 729, 1152)
    assert shapes["vision.blocks.26.mlp.fc1.weight"] == (4304, 1152)
    assert shapes["vision.proj_mlp.fc1.weight"] == (8192, 2304)
    assert shapes["vision.proj_mlp.fc2.weight"] == (2048, 8192)
    assert shapes["region.coord_features"] == (1, 128) and shapes["region.size_features"] == (2, 256)
    assert shapes["region.coord_decoder.fc2.weight"] == (1024, 8192)
    assert shapes["region.size_decoder.fc2.weight"] == (2048, 8192)
    assert 1.90e9 < model.parameter_count() < 1.95e9  # ~1.93 B
    assert model.config.prefix_attn_len == 730
