"""Explicit maps from the bridge's physical action to each simulator's native action.

The bridge action (7,) float32 is ``[dx, dy, dz]`` metres, ``[droll, dpitch, dyaw]`` radians
(a small rotation, roll about x then pitch about y then yaw about z, fixed axes) and a gripper
command in ``[0 (open), 1 (closed)]``. Simulators want normalised commands:

- robosuite / LIBERO OSC_POSE (delta): ``[-1, 1]^6`` scaled linearly to +-0.05 m and +-0.5 rad
  (rotation as an axis-angle vector), gripper -1 open, +1 close.
- gymnasium-robotics Fetch: ``[-1, 1]^4``, position scaled by 0.05 m, gripper +1 open, -1 close.
- Meta-World: ``[-1, 1]^4``, mocap position scaled by 0.01 m, gripper +1 close, -1 open.
- ManiSkill3 ``pd_ee_delta_pose``: ``[-1, 1]^6`` scaled to +-0.1 m and +-0.1 rad (axis-angle,
  sign flipped: measured inverted on every axis), gripper +1 open, -1 close.

Pure numpy (no simulator import), so every mapping is unit-tested without a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtla_contracts.action_layout import ACTION_DIM, GRIPPER_INDEX, ROTATION, TRANSLATION


@dataclass(frozen=True)
class DeltaPoseScaling:
    """Physical size of a normalised command of 1.0."""

    max_translation_m: float
    max_rotation_rad: float

    def __post_init__(self) -> None:
        if self.max_translation_m <= 0 or self.max_rotation_rad <= 0:
            raise ValueError("DeltaPoseScaling: limits must be > 0")


ROBOSUITE_OSC_SCALING = DeltaPoseScaling(max_translation_m=0.05, max_rotation_rad=0.5)
MANISKILL_EE_DELTA_SCALING = DeltaPoseScaling(max_translation_m=0.1, max_rotation_rad=0.1)
FETCH_MAX_TRANSLATION_M = 0.05
METAWORLD_MAX_TRANSLATION_M = 0.01  # Meta-World's action_scale: 1/100 m of mocap motion per unit


def _check_action(action: np.ndarray) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"bridge action: expected {ACTION_DIM} values, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError("bridge action: contains NaN or inf")
    return a


def rpy_to_quat(rpy: np.ndarray) -> np.ndarray:
    """(3,) roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) -> (4,) quaternion xyzw."""
    roll, pitch, yaw = (float(v) * 0.5 for v in np.asarray(rpy).reshape(3))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ]
    )


def quat_to_rpy(quat: np.ndarray) -> np.ndarray:
    """(4,) quaternion xyzw -> (3,) roll, pitch, yaw (inverse of :func:`rpy_to_quat`)."""
    x, y, z, w = np.asarray(quat, dtype=np.float64).reshape(4)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    q = np.asarray(quat, dtype=np.float64).reshape(4)
    q = q / np.linalg.norm(q)
    if q[3] < 0:  # the shorter of the two equivalent rotations
        q = -q
    sin_half = np.linalg.norm(q[:3])
    if sin_half < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(sin_half, q[3])
    return q[:3] / sin_half * angle


def axis_angle_to_quat(axis_angle: np.ndarray) -> np.ndarray:
    aa = np.asarray(axis_angle, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = aa / angle
    return np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])


def rpy_to_axis_angle(rpy: np.ndarray) -> np.ndarray:
    return quat_to_axis_angle(rpy_to_quat(rpy))


def axis_angle_to_rpy(axis_angle: np.ndarray) -> np.ndarray:
    return quat_to_rpy(axis_angle_to_quat(axis_angle))


def gripper_to_signed(gripper_closed_01: float, *, close_positive: bool) -> float:
    """Bridge gripper [0 open, 1 closed] -> [-1, 1]; ``close_positive`` picks the sim's sign."""
    g = float(np.clip(gripper_closed_01, 0.0, 1.0))
    signed_close = 2.0 * g - 1.0
    return signed_close if close_positive else -signed_close


def signed_to_gripper(signed: float, *, close_positive: bool) -> float:
    s = float(np.clip(signed, -1.0, 1.0))
    return (s + 1.0) / 2.0 if close_positive else (1.0 - s) / 2.0


def bridge_to_delta_pose(action: np.ndarray, scaling: DeltaPoseScaling, *, close_positive: bool) -> np.ndarray:
    """Bridge (7,) -> normalised (7,) ``[pos/max_m, axis_angle/max_rad, gripper]``, clipped to [-1, 1]."""
    a = _check_action(action)
    out = np.empty(ACTION_DIM)
    out[TRANSLATION] = a[TRANSLATION] / scaling.max_translation_m
    out[ROTATION] = rpy_to_axis_angle(a[ROTATION]) / scaling.max_rotation_rad
    out[GRIPPER_INDEX] = gripper_to_signed(a[GRIPPER_INDEX], close_positive=close_positive)
    return np.clip(out, -1.0, 1.0)


def delta_pose_to_bridge(native: np.ndarray, scaling: DeltaPoseScaling, *, close_positive: bool) -> np.ndarray:
    """Inverse of :func:`bridge_to_delta_pose` (within the clipping range)."""
    n = np.clip(np.asarray(native, dtype=np.float64).reshape(ACTION_DIM), -1.0, 1.0)
    out = np.empty(ACTION_DIM, dtype=np.float32)
    out[TRANSLATION] = n[TRANSLATION] * scaling.max_translation_m
    out[ROTATION] = axis_angle_to_rpy(n[ROTATION] * scaling.max_rotation_rad)
    out[GRIPPER_INDEX] = signed_to_gripper(n[GRIPPER_INDEX], close_positive=close_positive)
    return out


def bridge_to_robosuite(action: np.ndarray, scaling: DeltaPoseScaling = ROBOSUITE_OSC_SCALING) -> np.ndarray:
    """robosuite/LIBERO OSC_POSE delta: gripper -1 open, +1 close."""
    return bridge_to_delta_pose(action, scaling, close_positive=True)


def robosuite_to_bridge(native: np.ndarray, scaling: DeltaPoseScaling = ROBOSUITE_OSC_SCALING) -> np.ndarray:
    return delta_pose_to_bridge(native, scaling, close_positive=True)


def bridge_to_maniskill(action: np.ndarray, scaling: DeltaPoseScaling = MANISKILL_EE_DELTA_SCALING) -> np.ndarray:
    """ManiSkill3 pd_ee_delta_pose (normalised): gripper +1 open, -1 close; the rotation negated.

    Measured on PickCube-v1 (Panda, mani-skill 3.0.1): a positive command about each base axis
    turns the TCP the other way about that axis (tests/sim_adapters/test_maniskill.py), so the
    axis-angle vector is sent with its sign flipped; translation is as commanded.
    """
    out = bridge_to_delta_pose(action, scaling, close_positive=False)
    out[3:6] = -out[3:6]
    return out


def bridge_to_fetch(action: np.ndarray, max_translation_m: float = FETCH_MAX_TRANSLATION_M) -> np.ndarray:
    """Fetch (4,): position / 0.05 m, gripper +1 open, -1 close; the rotation is fixed by the env."""
    a = _check_action(action)
    out = np.empty(4)
    out[TRANSLATION] = a[TRANSLATION] / max_translation_m
    out[3] = gripper_to_signed(a[GRIPPER_INDEX], close_positive=False)
    return np.clip(out, -1.0, 1.0)


def bridge_to_metaworld(action: np.ndarray, max_translation_m: float = METAWORLD_MAX_TRANSLATION_M) -> np.ndarray:
    """Meta-World (4,): mocap position / 0.01 m per step, gripper +1 close, -1 open; no rotation."""
    a = _check_action(action)
    out = np.empty(4)
    out[:3] = a[:3] / max_translation_m
    out[3] = gripper_to_signed(a[6], close_positive=True)
    return np.clip(out, -1.0, 1.0)
