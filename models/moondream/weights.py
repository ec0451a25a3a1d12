"""Loading the official ``model.safetensors`` (keys ``model.vision.*``, ``model.text.*``,
``model.region.*``, stored fp16) into :class:`MoondreamModel`, with every key and shape checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.moondream.config import MoondreamConfig
from models.moondream.model import MoondreamModel
from vtla_contracts.errors import CheckpointError

logger = logging.getLogger(__name__)

KEY_PREFIX = "model."


def checkpoint_keys(model: MoondreamModel) -> dict[str, tuple[int, ...]]:
    """Official key -> expected shape, for every parameter of the model."""
    return {KEY_PREFIX + name: tuple(param.shape) for name, param in model.named_parameters()}


def load_checkpoint(
    path: Path, config: MoondreamConfig, device: torch.device, dtype: torch.dtype
) -> MoondreamModel:
    """Build the model for ``config`` and fill it from ``path``; fails naming the first bad key."""
    with torch.device("meta"):
        skeleton = MoondreamModel(config)
    expected = checkpoint_keys(skeleton)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        present = set(handle.keys())
        for key, shape in expected.items():
            if key not in present:
                raise CheckpointError(f"{path}: missing key {key!r} (expected shape {list(shape)})")
            tensor = handle.get_slice(key)
            found = tuple(tensor.get_shape())
            if found != shape:
                raise CheckpointError(f"{path}: key {key!r} has shape {list(found)}, expected {list(shape)}")
            state[key[len(KEY_PREFIX) :]] = handle.get_tensor(key).to(device=device, dtype=dtype)
    unexpected = sorted(present - set(expected))
    if unexpected:
        logger.warning("%s: %d unused keys, e.g. %s", path, len(unexpected), unexpected[:3])
    model = skeleton
    model.load_state_dict(state, strict=True, assign=True)
    model.text.rebuild_rope(device)
    return model.eval()


def save_checkpoint(model: MoondreamModel, path: Path, dtype: torch.dtype = torch.float16) -> None:
    """Write the model under the official key names (fp16 by default, like the official file)."""
    tensors = {
        KEY_PREFIX + name: param.detach().to(device="cpu", dtype=dtype).contiguous()
        for name, param in model.named_parameters()
    }
    save_file(tensors, str(path), metadata={"format": "pt"})
