"""Normalised model outputs -> physical actions, and the ``stats`` op's payload."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.vtla.config import ActionConfig, Normalization, VTLAConfig
from vtla_contracts.action_layout import ACTION_DESCRIPTION
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM


def denormalize_np(normalized: np.ndarray, norm: Normalization) -> np.ndarray:
    """Reference de-normalisation on numpy: (..., dim) -> (..., dim) float32, no clipping."""
    n = np.asarray(normalized, dtype=np.float64)
    if norm.type == "mean_std":
        out = n * np.asarray(norm.std) + np.asarray(norm.mean)
    else:
        assert norm.q01 is not None and norm.q99 is not None and norm.mask is not None
        q01, q99 = np.asarray(norm.q01), np.asarray(norm.q99)
        scaled = (n + 1.0) / 2.0 * (q99 - q01) + q01
        out = np.where(np.asarray(norm.mask, dtype=bool), scaled, n)
    return out.astype(np.float32)


class ActionDenormalizer:
    """De-normalises a (B, H, dim) tensor on the model's device: ``a = n * scale + offset``.

    Both normalisation types are affine per dimension, so they fold into one multiply-add;
    the gripper dimension is then clipped to [0, 1].
    """

    def __init__(self, action: ActionConfig, device: torch.device) -> None:
        scale, offset = affine_terms(action.normalization)
        self._scale = torch.tensor(scale, dtype=torch.float32, device=device)  # (dim,)
        self._offset = torch.tensor(offset, dtype=torch.float32, device=device)  # (dim,)
        self._gripper_index = action.gripper_index

    def __call__(self, normalized: torch.Tensor) -> torch.Tensor:
        actions = normalized.float() * self._scale + self._offset  # (B, H, dim)
        if self._gripper_index is not None:
            g = self._gripper_index
            actions[..., g] = actions[..., g].clamp(0.0, 1.0)
        return actions


def affine_terms(norm: Normalization) -> tuple[list[float], list[float]]:
    """(scale, offset) per dimension such that ``a = n * scale + offset``."""
    if norm.type == "mean_std":
        return list(norm.std), list(norm.mean)
    assert norm.q01 is not None and norm.q99 is not None and norm.mask is not None
    scale, offset = [], []
    for lo, hi, on in zip(norm.q01, norm.q99, norm.mask, strict=True):
        scale.append((hi - lo) / 2.0 if on else 1.0)
        offset.append((hi + lo) / 2.0 if on else 0.0)
    return scale, offset


def normalization_entry(norm: Normalization) -> dict[str, Any]:
    """The ``normalization`` field of the hello entry."""
    entry: dict[str, Any] = {"type": norm.type, "mean": list(norm.mean), "std": list(norm.std)}
    if norm.type == "quantile":
        entry.update(q01=list(norm.q01 or ()), q99=list(norm.q99 or ()), mask=list(norm.mask or ()))
    return entry


def stats_payload(norm: Normalization) -> dict[str, Any]:
    """The predecessor's ``/stats`` shape, plus ``type`` (and quantile fields when used)."""
    payload: dict[str, Any] = {
        "mean": [float(v) for v in norm.mean],
        "std": [float(v) for v in norm.std],
        "description": dict(ACTION_DESCRIPTION),
        "type": norm.type,
    }
    if norm.type == "quantile":
        payload.update(
            q01=[float(v) for v in norm.q01 or ()],
            q99=[float(v) for v in norm.q99 or ()],
            mask=[bool(v) for v in norm.mask or ()],
        )
    return payload


def io_entry(cfg: VTLAConfig) -> dict[str, Any]:
    """What a policy with this config takes and returns, as ``hello`` describes it: the action
    space, image size, cameras, tactile and proprio inputs. One source for every VTLA-shaped policy."""
    tactile: dict[str, Any] = {}
    if cfg.tactile.image:
        s = cfg.tactile.image_size
        tactile["image"] = {"shape": [s, s, 3], "dtypes": ["uint8", "float32"]}
    if cfg.tactile.force_torque:
        tactile["force_torque"] = {"dim": FORCE_TORQUE_DIM}
    return {
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
    }
