"""Checkpoint directory: ``config.json`` + ``model.safetensors`` + ``tokenizer.json``.

Loading is strict: every tensor the model has must be present with its exact shape, and
nothing else may be in the file; the error names the offending keys. The model is built on the
meta device and each tensor is read and cast to the target dtype on its own
(:mod:`models.loading`), so loading never holds a float32 copy of the model.
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

from models.loading import assert_no_meta, init_random, load_tensors, materialize, meta_skeleton, state_shapes
from models.vtla.config import ConfigError, VTLAConfig
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
    """Random weights (drawn from ``seed``, default cfg.seed) made directly on ``device`` in ``dtype``."""
    model = materialize(meta_skeleton(lambda: VTLAModel(cfg)), device, dtype)
    init_random(model, cfg.seed if seed is None else seed, normal_init_roots=(model.vision, model.language))
    return _finish(model, device)


def _finish(model: VTLAModel, device: torch.device) -> VTLAModel:
    rebuild_buffers(model, device)
    assert_no_meta(model)
    check_rope_base(model)
    return model.eval()


def rebuild_buffers(model: VTLAModel, device: torch.device) -> None:
    """Recompute the non-persistent buffers (not in a checkpoint, empty after a meta build), in float32."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    model.language.rotary_emb = Qwen2RotaryEmbedding(config=model.language.config).to(device)
    embeddings = model.vision.embeddings
    position_ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
    embeddings.register_buffer("position_ids", position_ids, persistent=False)
    scale = getattr(model.tactile, "force_torque_scale", None)
    if scale is not None:
        model.tactile.force_torque_scale = torch.tensor(
            model.cfg.tactile.force_torque_scale, dtype=torch.float32, device=device
        )


def check_rope_base(model: VTLAModel) -> None:
    """The rotary base the decoder runs with must be the checkpoint's (``text.rope_theta``).

    transformers 4.x ignores ``rope_parameters`` and silently keeps 10000; this catches that and any
    other path by which the running config or the rotary tables drift from the checkpoint.
    """
    want = float(model.cfg.text.rope_theta)
    params = getattr(model.language.config, "rope_parameters", None) or {}
    got = params.get("rope_theta") if isinstance(params, dict) else None
    if got is None or abs(float(got) - want) > 1e-6 * want:
        raise ConfigError(
            f"the decoder runs with rope_theta {got!r} but the checkpoint says {want:g} "
            "(transformers 5.x is required: pip install 'transformers>=5,<6')"
        )
    inv_freq = model.language.rotary_emb.inv_freq
    head_dim = model.cfg.text.hidden_size // model.cfg.text.num_heads
    expected = want ** (-2.0 / head_dim)  # the second rotary frequency, base ** (-2 / head_dim)
    if inv_freq.numel() < 2 or abs(float(inv_freq[1]) - expected) > 1e-3 * expected:
        raise ConfigError(f"the decoder's rotary table does not match rope_theta {want:g}")


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
    model = meta_skeleton(lambda: VTLAModel(cfg))
    with safe_open(str(path), framework="pt", device="cpu") as f:
        found = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    check_shapes(state_shapes(model), found, str(path))
    load_tensors(model, path, device, dtype)
    return _finish(model, device), read_tokenizer(directory)


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
    check_shapes(
        {k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in tensors.items()}, source
    )


def check_shapes(
    expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key (key -> shape maps)."""
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
        if expected[key] != tensors[key]:
            problems.append(f"tensor {key}: shape {tensors[key]} in the file, model expects {expected[key]}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
