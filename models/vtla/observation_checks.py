"""The VTLA's checks of one observation before it joins a batch: every refusal is an InputError
that names the input (the server answers it ``bad_request``; nothing else in the batch changes)."""

from __future__ import annotations

import numpy as np

from models.interfaces import InputError, Observation
from models.vtla.config import VTLAConfig
from models.vtla.text import PromptEncoder
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

TACTILE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
MAX_CHARS_PER_TOKEN = 16  # more characters than this per allowed token cannot fit


def check_observation(obs: Observation, cfg: VTLAConfig, prompts: PromptEncoder) -> None:
    """Cameras, tactile inputs, proprio and the instruction's prompt length against ``cfg``."""
    cameras = set(cfg.cameras)
    unknown = sorted(set(obs.images) - cameras)
    if unknown:
        raise InputError(f"unknown camera(s) {unknown}; this model's cameras: {list(cfg.cameras)}")
    for name in cfg.cameras:
        if name not in obs.images:
            raise InputError(f"missing image for camera {name!r}")
        _check_image(obs.images[name], f"image {name!r}", (np.dtype(np.uint8),))
    if obs.tactile_image is not None:
        if not cfg.tactile.image:
            raise InputError("this model takes no tactile image")
        _check_image(obs.tactile_image, "tactile image", TACTILE_DTYPES)
    if obs.force_torque is not None:
        if not cfg.tactile.force_torque:
            raise InputError("this model takes no force_torque input")
        _check_vector(obs.force_torque, "force_torque", FORCE_TORQUE_DIM)
    if cfg.proprio_dim:
        if obs.proprio is None:
            raise InputError(f"this model needs proprio of shape ({cfg.proprio_dim},)")
        _check_vector(obs.proprio, "proprio", cfg.proprio_dim)
    elif obs.proprio is not None:
        raise InputError("this model takes no proprio")
    if obs.instruction is not None and not isinstance(obs.instruction, str):
        raise InputError("instruction must be a string")
    max_tokens = cfg.prompt.max_text_tokens
    if obs.instruction is not None and len(obs.instruction) > MAX_CHARS_PER_TOKEN * max_tokens:
        # refused before tokenising: a huge string never reaches the tokenizer or its cache
        raise InputError(
            f"instruction too long: {len(obs.instruction)} characters, this model's limit is "
            f"{max_tokens} tokens"
        )
    before, after = prompts.encode(prompts.resolve(obs.instruction))
    n_tokens = len(before) + len(after)
    if n_tokens > cfg.prompt.max_text_tokens:
        raise InputError(
            f"instruction too long: the prompt is {n_tokens} tokens, this model's limit is "
            f"{cfg.prompt.max_text_tokens}"
        )


def _check_image(image: object, what: str, dtypes: tuple[np.dtype, ...]) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be an array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{what} must have shape (H, W, 3), got {tuple(image.shape)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{what} is empty: shape {tuple(image.shape)}")
    if image.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in dtypes)
        raise InputError(f"{what} must be {allowed}, got {image.dtype}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError(f"{what} has non-finite values")


def _check_vector(value: object, what: str, dim: int) -> None:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{what} must be an array, got {type(value).__name__}")
    if value.shape != (dim,):
        raise InputError(f"{what} must have shape ({dim},), got {tuple(value.shape)}")
    if value.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got {value.dtype}")
    if not np.isfinite(value.astype(np.float64)).all():
        raise InputError(f"{what} has non-finite values")
