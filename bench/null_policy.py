"""A benchmark-only null policy: answers every ``act`` with zeros, instantly.

This is a measuring tool, not a product model. Served with ``[policy] kind =
"bench.null_policy:load"``, it lets the transport benchmark see what the bridge itself costs
(codec, ROUTER socket, I/O thread, queues, inference loop, reply) with no model compute in the
way. Its actions are meaningless zeros; ``hello`` and ``health`` say so (``random_weights``).

Options (the ``[policy] options`` table): ``chunk_size`` (H, default 1), ``image_size``
(advertised square size, default 224), ``cameras`` (default ``["primary"]``), ``batch_ms``
(default 0: instant). With ``batch_ms`` > 0 it is a *fixed-cost* policy: every batch, whatever
its size up to ``max_batch``, takes that long (a sleep: no CPU), as a GPU batch roughly does;
the scale-out benchmark uses it to put a known capacity (max_batch / batch_ms) behind each server.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from models.interfaces import InputError, ModelInfo, Observation
from vtla_contracts.action_layout import ACTION_DIM, ACTION_NAMES, ACTION_UNITS
from vtla_contracts.model_spec import ModelSpec


class NullPolicy:
    """Implements :class:`models.interfaces.ActPolicy`; ``act`` returns (B, H, 7) zeros."""

    def __init__(
        self, chunk_size: int, image_size: int, cameras: tuple[str, ...], device: str, dtype: str,
        batch_ms: float = 0.0,
    ) -> None:
        if chunk_size < 1 or image_size < 1 or not cameras or batch_ms < 0:
            raise ValueError("null policy: chunk_size and image_size must be >= 1, cameras non-empty, batch_ms >= 0")
        self.batch_s = batch_ms / 1000.0
        self.chunk_size = chunk_size
        self.image_size = image_size
        self.cameras = cameras
        self._info = ModelInfo(
            name="null",
            kind="bench.null_policy",
            device=device,
            dtype=dtype,
            random_weights=True,
            parameters=0,
            source="benchmark null policy (zeros)" + (f", fixed cost {batch_ms:g} ms per batch" if batch_ms else ""),
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def describe(self) -> dict[str, Any]:
        return {
            "action": {
                "dim": ACTION_DIM,
                "chunk_size": self.chunk_size,
                "names": list(ACTION_NAMES),
                "units": list(ACTION_UNITS),
                "normalization": {"type": "none"},
            },
            "image_size": [self.image_size, self.image_size],
            "cameras": list(self.cameras),
            "tactile": {},
            "proprio": None,
            "random_weights": True,
            "parameters": 0,
            "preset": "bench-null",
            "note": "benchmark-only null policy: returns zeros",
            "batch_ms": self.batch_s * 1000.0,
        }

    def stats(self) -> dict[str, Any]:
        zeros = [0.0] * ACTION_DIM
        ones = [1.0] * ACTION_DIM
        return {
            "mean": zeros,
            "std": ones,
            "description": {"0-2": "translation (m)", "3-5": "rotation (rad)", "6": "gripper"},
        }

    def validate(self, obs: Observation) -> None:
        # (loops, not comprehensions: the transport benchmark counts this policy's checks as overhead)
        for name in self.cameras:
            image = obs.images.get(name)
            if image is None:
                raise InputError(f"missing image for camera {name!r}")
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise InputError(f"image {name!r}: expected (H, W, 3) uint8, got {image.dtype} {image.shape}")
        if len(obs.images) != len(self.cameras):
            unknown = sorted(set(obs.images) - set(self.cameras))
            raise InputError(f"unknown camera(s) {unknown}; cameras: {list(self.cameras)}")

    def batch_key(self, obs: Observation) -> Hashable:
        if len(self.cameras) == 1:
            return obs.images[self.cameras[0]].shape
        return tuple([obs.images[name].shape for name in self.cameras])

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        if self.batch_s:
            time.sleep(self.batch_s)
        return np.zeros((len(batch), self.chunk_size, ACTION_DIM), dtype=np.float32)  # (B, H, 7)

    def reset(self, session: str | None) -> None:
        """Stateless."""

    def warmup(self) -> None:
        """Nothing to warm up."""


def load(spec: ModelSpec, device: str, dtype: str) -> NullPolicy:
    """Registry factory (``kind = "bench.null_policy:load"``)."""
    options = dict(spec.options)
    cameras = options.get("cameras", ["primary"])
    if not isinstance(cameras, (list, tuple)) or not all(isinstance(c, str) for c in cameras):
        raise ValueError("null policy: options.cameras must be a list of strings")
    return NullPolicy(
        chunk_size=int(options.get("chunk_size", 1)),
        image_size=int(options.get("image_size", 224)),
        cameras=tuple(cameras),
        device=device,
        dtype=dtype,
        batch_ms=float(options.get("batch_ms", 0.0)),
    )
