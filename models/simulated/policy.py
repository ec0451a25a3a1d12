"""``[policy] kind = "simulated"``: the VTLA policy's act forward timed on a simulated device."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from models.interfaces import InputError, ModelInfo, Observation
from models.simulated.costs import vtla_forward, vtla_parameters
from models.simulated.device import DeviceWork
from models.simulated.presets import POLICY_PRESETS, describe_preset, load_preset, policy_workload
from models.simulated.streams import streams_for
from models.vtla.config import VTLAConfig
from models.vtla.normalization import denormalize_np, io_entry, stats_payload
from models.vtla.presets import preset_config
from vtla_contracts.model_spec import ModelSpec
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

logger = logging.getLogger(__name__)


class SimulatedPolicy:
    """Implements :class:`models.interfaces.ActPolicy`; waits what the imitated forward would take."""

    def __init__(self, spec: ModelSpec) -> None:
        self.preset = load_preset(spec.preset, POLICY_PRESETS, spec.options)
        self.workload = policy_workload(self.preset)
        self.cfg: VTLAConfig = preset_config(self.preset.imitates)
        chunk, dim = self.cfg.action.chunk_size, self.cfg.action.dim
        self._action = denormalize_np(np.zeros((chunk, dim), np.float32), self.cfg.action.normalization)
        self._info = ModelInfo(
            name="vtla",
            kind="simulated",
            device=f"simulated {self.preset.device.name}",
            dtype="bfloat16",
            random_weights=True,
            parameters=int(vtla_parameters(self.cfg)),
            source=self.preset.name,
        )
        self.forwards = 0  # counters a test or benchmark may read
        self.rows = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    def forward_work(self, batch: int) -> DeviceWork:
        c = self.preset.costs
        return vtla_forward(self.cfg, batch, self.workload.text_tokens, c.activation_rw_per_layer, c.kernels)

    def forward_ms(self, batch: int) -> float:
        """Simulated time of one forward of ``batch`` observations alone (the cost model, no waiting)."""
        return self.preset.device.phase_ms(self.forward_work(batch))

    def describe(self) -> dict[str, Any]:
        return {
            **io_entry(self.cfg),
            "proprio": None,  # the simulated policy reads no robot state
            "random_weights": True,
            "parameters": self._info.parameters,
            "simulated": True,
            "simulation": describe_preset(self.preset),
            "warning": "simulated: no model runs; actions are constant, timing imitates the named device",
        }

    def stats(self) -> dict[str, Any]:
        return stats_payload(self.cfg.action.normalization)

    def validate(self, obs: Observation) -> None:
        unknown = sorted(set(obs.images) - set(self.cfg.cameras))
        if unknown:
            raise InputError(f"unknown camera(s) {unknown}; this model's cameras: {list(self.cfg.cameras)}")
        for name in self.cfg.cameras:
            image = obs.images.get(name)
            if image is None:
                raise InputError(f"missing image for camera {name!r}")
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(f"image {name!r} must be (H, W, 3) uint8")
        if obs.force_torque is not None and obs.force_torque.shape != (FORCE_TORQUE_DIM,):
            raise InputError(f"force_torque must have shape ({FORCE_TORQUE_DIM},)")
        if obs.proprio is not None:
            raise InputError("this model takes no proprio")

    def batch_key(self, obs: Observation) -> Hashable:
        """Every observation shares one forward: the imitated model resizes frames and masks absent touch."""
        return ()

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        # the high-priority stream: beside a decode step in flight (launched by the simulated
        # generator on this thread), both are timed by the shared-roofline rule (streams.py)
        streams_for(self.preset.device).run(self.preset.device.phase_times(self.forward_work(len(batch))))
        self.forwards += 1
        self.rows += len(batch)
        return np.broadcast_to(self._action, (len(batch), *self._action.shape)).copy()

    def reset(self, session: str | None) -> None:
        return None

    def warmup(self) -> None:
        return None


def load_policy(spec: ModelSpec, device: str, dtype: str) -> SimulatedPolicy:
    """Registry factory; ``device``/``dtype`` are ignored: the simulated device is the preset's."""
    policy = SimulatedPolicy(spec)
    logger.warning(
        "SIMULATED policy %s (imitates %s on %s): no model runs, actions are constant",
        spec.preset, policy.preset.imitates, policy.preset.device.name,
    )
    return policy
