"""Scripted experts served through ``act``, exactly like a learned policy.

They read the privileged state that sim adapters send as ``proprio`` (layout:
:mod:`vtla_contracts.privileged_state`) and, for the touch expert, the tactile image. Stateless: every
action is a function of the request, so batching, restarts and sessions need nothing special.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.experts.pick_place import ExpertParams, expert_chunk
from models.interfaces import InputError, ModelInfo, Observation
from vtla_contracts.action_layout import ACTION_DESCRIPTION, ACTION_DIM, ACTION_NAMES, ACTION_UNITS
from vtla_contracts.privileged_state import PROPRIO_DIM, PROPRIO_FIELDS, PrivilegedState
from vtla_contracts.tactile_layout import pads_in_contact

logger = logging.getLogger(__name__)

DEFAULT_CAMERAS = ("primary",)


@dataclass(frozen=True)
class ExpertSpec:
    kind: str
    params: ExpertParams
    chunk_size: int = 1
    touch: bool = False  # decide "holding" from the tactile image (both finger pads in contact)
    touch_threshold_n: float = 0.5

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"{self.kind}: chunk_size must be >= 1, got {self.chunk_size}")
        if self.touch_threshold_n <= 0:
            raise ValueError(f"{self.kind}: touch_threshold_n must be > 0")


class ExpertPolicy:
    """An :class:`models.interfaces.ActPolicy` computing actions with a scripted rule."""

    def __init__(self, spec: ExpertSpec, device: str, dtype: str) -> None:
        self.spec = spec
        self._info = ModelInfo(
            name=spec.kind,
            kind=spec.kind,
            device=device,
            dtype=dtype,
            random_weights=False,
            parameters=0,
            source="scripted",
        )
        logger.info("scripted expert %s ready (chunk_size=%d, touch=%s)", spec.kind, spec.chunk_size, spec.touch)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def describe(self) -> dict[str, Any]:
        tactile: dict[str, Any] = {"image": {"required": True, "channels": "0: left pad, 1: right pad"}} \
            if self.spec.touch else {}
        return {
            "action": {
                "dim": len(ACTION_NAMES),
                "chunk_size": self.spec.chunk_size,
                "names": list(ACTION_NAMES),
                "units": list(ACTION_UNITS),
                "normalization": {"type": "mean_std", "mean": [0.0] * ACTION_DIM, "std": [1.0] * ACTION_DIM},
            },
            "image_size": None,  # any size: the expert does not look at pixels
            "cameras": list(DEFAULT_CAMERAS),
            "tactile": tactile,
            "proprio": {"dim": PROPRIO_DIM, "layout": [[name, n] for name, n in PROPRIO_FIELDS],
                        "required": True},
            "random_weights": False,
            "parameters": 0,
            "expert": True,
            "preset": "scripted",
        }

    def stats(self) -> dict[str, Any]:
        zeros, ones = [0.0] * ACTION_DIM, [1.0] * ACTION_DIM
        return {"mean": zeros, "std": ones, "description": dict(ACTION_DESCRIPTION), "type": "mean_std"}

    def validate(self, obs: Observation) -> None:
        if obs.proprio is None:
            raise InputError(
                f"{self.spec.kind} needs 'proprio': the privileged state ({PROPRIO_DIM} floats, "
                "vtla_contracts.privileged_state) that the sim adapters send"
            )
        proprio = np.asarray(obs.proprio)
        if proprio.reshape(-1).shape != (PROPRIO_DIM,):
            raise InputError(f"{self.spec.kind}: proprio must have {PROPRIO_DIM} values, got {proprio.size}")
        if not np.all(np.isfinite(proprio)):
            raise InputError(f"{self.spec.kind}: proprio contains NaN or inf")
        if self.spec.touch:
            tactile = obs.tactile_image
            if tactile is None:
                raise InputError(f"{self.spec.kind} needs tactile.image (finger-pad touch readings)")
            if tactile.ndim != 3 or tactile.shape[2] < 2:
                raise InputError(f"{self.spec.kind}: tactile.image must be (h, w, >=2), got {tactile.shape}")

    def batch_key(self, obs: Observation) -> Hashable:
        return self.spec.kind  # no tensors: any observations can share a "batch"

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        """-> (B, chunk_size, 7) float32 in physical units."""
        out = np.zeros((len(batch), self.spec.chunk_size, ACTION_DIM), dtype=np.float32)
        for i, obs in enumerate(batch):
            assert obs.proprio is not None  # validate() ran first
            state = PrivilegedState.unpack(obs.proprio)
            touching = None
            if self.spec.touch:
                assert obs.tactile_image is not None
                touching = pads_in_contact(obs.tactile_image, self.spec.touch_threshold_n)
            out[i] = expert_chunk(state, self.spec.params, self.spec.chunk_size, touching)
        return out

    def reset(self, session: str | None) -> None:
        """Stateless: nothing to clear."""

    def warmup(self) -> None:
        state = PrivilegedState(
            eef_pos=np.array([0.0, 0.0, 0.2]),
            eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),
            gripper_width=self.spec.params.open_width_m,
            object_pos=np.array([0.05, 0.0, 0.02]),
            object_quat=np.array([0.0, 0.0, 0.0, 1.0]),
            object_width=0.04,
            target_pos=np.array([0.05, 0.0, 0.2]),
        )
        touching = False if self.spec.touch else None
        expert_chunk(state, self.spec.params, self.spec.chunk_size, touching)
