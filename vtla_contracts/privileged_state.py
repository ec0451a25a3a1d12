"""The privileged-state vector that sim adapters send as ``proprio`` and scripted experts read.

This module is the ONE place that defines the layout; both sides import it. It is torch-free
and simulator-free, so the server (experts) and the simulator process (adapters) share it.

All positions are in the robot base frame (metres), quaternions are (x, y, z, w).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

# (field name, length) in order; the vector is their concatenation, float32
PROPRIO_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("eef_pos", 3),  # end-effector (grip site) position
    ("eef_quat", 4),  # end-effector orientation
    ("gripper_width", 1),  # distance between the finger pads, metres (open ~0.08 for the Panda)
    ("object_pos", 3),  # the object to grasp
    ("object_quat", 4),
    ("object_width", 1),  # the object's extent between the fingers when grasped, metres
    ("target_pos", 3),  # where the object's centre should go (lift height, on top of B, bin)
)
PROPRIO_DIM: Final = sum(n for _, n in PROPRIO_FIELDS)


def _slices() -> dict[str, slice]:
    out: dict[str, slice] = {}
    start = 0
    for name, length in PROPRIO_FIELDS:
        out[name] = slice(start, start + length)
        start += length
    return out


PROPRIO_SLICES: Final[dict[str, slice]] = _slices()


@dataclass(frozen=True)
class PrivilegedState:
    eef_pos: np.ndarray  # (3,)
    eef_quat: np.ndarray  # (4,) xyzw
    gripper_width: float
    object_pos: np.ndarray  # (3,)
    object_quat: np.ndarray  # (4,) xyzw
    object_width: float
    target_pos: np.ndarray  # (3,)

    def pack(self) -> np.ndarray:
        """-> (PROPRIO_DIM,) float32."""
        out = np.zeros(PROPRIO_DIM, dtype=np.float32)
        for name, length in PROPRIO_FIELDS:
            value = np.asarray(getattr(self, name), dtype=np.float32).reshape(-1)
            if value.shape != (length,):
                raise ValueError(f"proprio field {name}: expected {length} values, got {value.shape[0]}")
            out[PROPRIO_SLICES[name]] = value
        return out

    @classmethod
    def unpack(cls, vector: np.ndarray) -> PrivilegedState:
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vec.shape != (PROPRIO_DIM,):
            raise ValueError(f"proprio: expected {PROPRIO_DIM} values, got {vec.shape[0]}")
        if not np.all(np.isfinite(vec)):
            raise ValueError("proprio: contains NaN or inf")
        s = PROPRIO_SLICES
        return cls(
            eef_pos=vec[s["eef_pos"]].copy(),
            eef_quat=vec[s["eef_quat"]].copy(),
            gripper_width=float(vec[s["gripper_width"]][0]),
            object_pos=vec[s["object_pos"]].copy(),
            object_quat=vec[s["object_quat"]].copy(),
            object_width=float(vec[s["object_width"]][0]),
            target_pos=vec[s["target_pos"]].copy(),
        )
