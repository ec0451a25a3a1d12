"""Checkpoint directory: ``config.json`` + ``model.safetensors`` + ``tokenizer.json``.

Loading is strict: every tensor the model has must be present with its exact shape, and
nothing else may be in the file; the error names the offending keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from models.vtla.config import VTLAConfig
from models.vtla.model import VTLAModel
from models.vtla.text import build_byte_tokenizer, load_tokenizer
from vtla_contracts.errors import CheckpointError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def build_model(
    cfg: VTLAConfig, device: torch.device, dtype: torch.dtype, seed: int | None = None
) -> VTLAModel:
    """A model in eval mode on ``device``; random weights drawn from ``seed`` (default: cfg.seed)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    with device:
        model = VTLAModel(cfg)
    return model.to(dtype=dtype).eval()


def save_checkpoint(model: VTLAModel, tokenizer: Tokenizer, directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save(str(out / TOKENIZER_FILE))
    logger.info("saved VTLA checkpoint %s (%d tensors)", out, len(tensors))
    return out


def read_config(directory: str | Path) -> VTLAConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no config.json in the checkpoint directory")
    return VTLAConfig.from_dict(json.loads(path.read_text()))


def read_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory) / TOKENIZER_FILE
    if path.is_file():
        return load_tokenizer(path)
    logger.warning("%s missing: using the built-in byte-level tokenizer", path)
    return build_byte_tokenizer()


def load_checkpoint(
    directory: str | Path, device: torch.device, dtype: torch.dtype
) -> tuple[VTLAModel, Tokenizer]:
    cfg = read_config(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no model.safetensors in the checkpoint directory")
    model = build_model(cfg, device, dtype)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    load_state_strict(model, tensors, str(path))
    return model, read_tokenizer(directory)


def load_state_strict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model`` after checking names and shapes; raises CheckpointError."""
    expected = model.state_dict()
    check_state(expected, tensors, source)
    with torch.no_grad():
        for key, value in tensors.items():
            expected[key].copy_(value)


def check_state(
    expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(
            f"unexpected tensor(s): {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}"
        )
    for key in sorted(set(expected) & set(tensors)):
        if tuple(expected[key].shape) != tuple(tensors[key].shape):
            problems.append(
                f"tensor {key}: shape {tuple(tensors[key].shape)} in the file, model expects "
                f"{tuple(expected[key].shape)}"
            )
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
