"""The VTLA policy behind ``act``: validation, batching keys, one forward per batch."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from models.interfaces import InputError, ModelInfo, Observation
from models.vtla.checkpoint import build_model, load_checkpoint
from models.vtla.config import VTLAConfig
from models.vtla.model import VTLAInputs, VTLAModel, count_parameters
from models.vtla.normalization import ActionDenormalizer, normalization_entry, stats_payload
from models.vtla.preprocess import HostStaging, images_to_pixels, pad_token_ids
from models.vtla.presets import preset_config
from models.vtla.text import PromptEncoder, build_byte_tokenizer
from vtla_contracts.model_spec import ModelSpec
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TACTILE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
MAX_CHARS_PER_TOKEN = 16  # more characters than this per allowed token cannot fit


class VTLAPolicy:
    """Implements :class:`models.interfaces.ActPolicy` for a loaded :class:`VTLAModel`."""

    def __init__(
        self, model: VTLAModel, tokenizer: Tokenizer, device: torch.device, random_weights: bool, source: str
    ) -> None:
        self.model = model
        self.cfg: VTLAConfig = model.cfg
        self._device = device
        self._dtype = next(model.parameters()).dtype
        self._prompts = PromptEncoder(tokenizer, self.cfg.prompt, self.cfg.text.vocab_size)
        self._denormalize = ActionDenormalizer(self.cfg.action, device)
        self._staging = HostStaging(device)
        self._source = source
        self._info = ModelInfo(
            name="vtla",
            kind="vtla",
            device=str(device),
            dtype=str(self._dtype).removeprefix("torch."),
            random_weights=random_weights,
            parameters=count_parameters(model),
            source=source,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        tactile: dict[str, Any] = {}
        if cfg.tactile.image:
            s = cfg.tactile.image_size
            tactile["image"] = {"shape": [s, s, 3], "dtypes": ["uint8", "float32"]}
        if cfg.tactile.force_torque:
            tactile["force_torque"] = {"dim": FORCE_TORQUE_DIM}
        entry: dict[str, Any] = {
            "action": {
                "dim": cfg.action.dim,
                "chunk_size": cfg.action.chunk_size,
                "names": list(cfg.action.names),
                "units": list(cfg.action.units),
                "normalization": normalization_entry(cfg.action.normalization),
            },
            "image_size": [cfg.vision.image_size, cfg.vision.image_size],
            "cameras": list(cfg.cameras),
            "tactile": tactile,
            "proprio": {"dim": cfg.proprio_dim} if cfg.proprio_dim else None,
            "readout": cfg.action.readout,
            "random_weights": self._info.random_weights,
            "parameters": self._info.parameters,
        }
        entry["preset" if self._info.random_weights else "checkpoint"] = self._source
        return entry

    def stats(self) -> dict[str, Any]:
        return stats_payload(self.cfg.action.normalization)

    # -- validation -----------------------------------------------------------------------

    def validate(self, obs: Observation) -> None:
        cfg = self.cfg
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
        before, after = self._prompts.encode(self._prompts.resolve(obs.instruction))
        n_tokens = len(before) + len(after)
        if n_tokens > cfg.prompt.max_text_tokens:
            raise InputError(
                f"instruction too long: the prompt is {n_tokens} tokens, this model's limit is "
                f"{cfg.prompt.max_text_tokens}"
            )

    def batch_key(self, obs: Observation) -> Hashable:
        images = tuple((name, _shape(obs.images.get(name))) for name in self.cfg.cameras)
        tactile = None
        if obs.tactile_image is not None:
            tactile = (obs.tactile_image.shape, obs.tactile_image.dtype.str)
        proprio = None if obs.proprio is None else obs.proprio.shape
        return (images, tactile, obs.force_torque is not None, proprio)

    # -- inference ------------------------------------------------------------------------

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        """One forward for observations sharing a batch_key -> (B, H, dim) float32, physical units."""
        if not batch:
            raise ValueError("act() needs at least one observation")
        with torch.inference_mode():
            normalized = self.model(self._inputs(batch))  # (B, H, dim)
            actions = self._denormalize(normalized)
            return actions.cpu().numpy().astype(np.float32, copy=False)

    def reset(self, session: str | None) -> None:
        """Stateless policy: nothing to clear."""

    def warmup(self) -> None:
        s = self.cfg.vision.image_size
        image = np.zeros((s, s, 3), dtype=np.uint8)
        obs = Observation(images={name: image for name in self.cfg.cameras})
        if self.cfg.proprio_dim:
            obs = Observation(images=obs.images, proprio=np.zeros(self.cfg.proprio_dim, dtype=np.float32))
        self.act([obs])
        logger.info("VTLA warm-up done (batch 1, %dx%d)", s, s)

    def _inputs(self, batch: Sequence[Observation]) -> VTLAInputs:
        cfg, dev, dt = self.cfg, self._device, self._dtype
        pixels = []
        for name in cfg.cameras:
            raw = self._staging.to_device(
                [obs.images[name] for obs in batch], slot=f"camera:{name}"
            )  # (B, H, W, 3) uint8
            pre = cfg.preprocess
            pixels.append(
                images_to_pixels(
                    raw, cfg.vision.image_size, pre.image_mean, pre.image_std, pre.resize_mode, dt
                )
            )
        s = cfg.vision.image_size
        pixel_values = torch.stack(pixels, dim=1).reshape(-1, 3, s, s)  # (B*C, 3, S, S) sample-major
        prompts = [self._prompts.encode(self._prompts.resolve(obs.instruction)) for obs in batch]
        tactile_image = None
        if batch[0].tactile_image is not None:
            raw_t = self._staging.to_device([_tactile(obs) for obs in batch], slot="tactile")
            tac = cfg.tactile
            tactile_image = images_to_pixels(
                raw_t, tac.image_size, tac.image_mean, tac.image_std, "bilinear", dt
            )
        force_torque = None
        if batch[0].force_torque is not None:
            ft = np.stack([np.asarray(obs.force_torque, dtype=np.float32) for obs in batch])
            force_torque = torch.from_numpy(ft).to(dev).to(dt)
        proprio = None
        if cfg.proprio_dim:
            pr = np.stack([np.asarray(obs.proprio, dtype=np.float32) for obs in batch])
            proprio = torch.from_numpy(pr).to(dev).to(dt)
        return VTLAInputs(
            pixel_values=pixel_values,
            text_before=pad_token_ids([p[0] for p in prompts], dev),
            text_after=pad_token_ids([p[1] for p in prompts], dev),
            lens_before=tuple(len(p[0]) for p in prompts),
            lens_after=tuple(len(p[1]) for p in prompts),
            tactile_image=tactile_image,
            force_torque=force_torque,
            proprio=proprio,
        )


def _shape(array: object) -> tuple[int, ...] | None:
    return tuple(array.shape) if isinstance(array, np.ndarray) else None


def _tactile(obs: Observation) -> np.ndarray:
    assert obs.tactile_image is not None
    return obs.tactile_image


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


def load_policy(spec: ModelSpec, device: str, dtype: str) -> VTLAPolicy:
    """Registry factory: ``spec.path`` -> that checkpoint; empty -> ``spec.preset``, random weights."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {sorted(DTYPES)}")
    torch_device = torch.device(device)
    torch_dtype = DTYPES[dtype]
    if spec.path:
        model, tokenizer = load_checkpoint(spec.path, torch_device, torch_dtype)
        policy = VTLAPolicy(model, tokenizer, torch_device, random_weights=False, source=str(Path(spec.path)))
    else:
        if spec.hub_download:
            raise ValueError(
                "VTLA has no public Hub checkpoint: set the policy's path to a local checkpoint directory "
                "(convert the predecessor's with `vtla-bridge convert-vtla`), or leave hub_download off"
            )
        cfg = preset_config(spec.preset)
        model = build_model(cfg, torch_device, torch_dtype)
        policy = VTLAPolicy(
            model, build_byte_tokenizer(), torch_device, random_weights=True, source=spec.preset
        )
        logger.warning("VTLA preset %r has RANDOM weights: its actions are meaningless", spec.preset)
    info = policy.info
    logger.info(
        "VTLA loaded: %s on %s (%s), %.1fM parameters",
        info.source,
        info.device,
        info.dtype,
        info.parameters / 1e6,
    )
    return policy
