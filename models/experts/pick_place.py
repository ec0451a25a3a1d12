"""A stateless scripted pick-and-place rule over the privileged state (no torch, no simulator).

Every decision is a function of the current state alone, so the expert needs no per-session
memory and recovers from slips: approach above the object with the gripper open, descend,
close, carry the object to the target (above it first, then down), and release there (or, for
lifting, hold it at the target). Actions are bridge units: metres, radians, gripper 0..1.

For an action chunk (H > 1) the rule is rolled forward in a kinematic model of itself (the
end effector moves by the commanded delta; a held object moves with it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vtla_contracts.action_layout import ACTION_DIM, GRIPPER_INDEX
from vtla_contracts.privileged_state import PrivilegedState

GRIPPER_OPEN = 0.0
GRIPPER_CLOSED = 1.0


@dataclass(frozen=True)
class ExpertParams:
    max_step_m: float = 0.02  # largest translation per control step
    gain: float = 1.0  # fraction of the remaining position error commanded per step
    open_width_m: float = 0.08  # finger distance when fully open
    grasp_tol_m: float = 0.012  # xy/z distance from the grasp point at which the gripper closes
    approach_height_m: float = 0.08  # hover this far above the object before descending
    grasp_offset_z_m: float = 0.0  # end-effector height relative to the object's centre at grasp
    grip_margin_m: float = 0.008  # width <= object width + margin: the object is held
    hold_distance_m: float = 0.03  # the object must be this close to the grip point to count as held
    carry_clearance_m: float = 0.05  # while carrying, travel at least this far above the target
    place_tol_m: float = 0.012  # object within this of the target -> release (or hold)
    release_at_target: bool = True  # False: lift tasks keep holding at the target
    retreat_m: float = 0.10  # after release, move up this far above the target
    yaw_period_rad: float = float(np.pi / 2)  # object symmetry about z (cube: pi/2); 0: do not align
    yaw_tol_rad: float = 0.05  # align the gripper's yaw to the object within this before descending
    max_yaw_step_rad: float = 0.15  # largest yaw change per control step

    def __post_init__(self) -> None:
        for name in ("max_step_m", "gain", "open_width_m", "grasp_tol_m", "place_tol_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExpertParams.{name}: must be > 0")


@dataclass(frozen=True)
class ExpertCommand:
    delta_m: np.ndarray  # (3,)
    gripper: float  # 0 open .. 1 closed
    phase: str  # for logs and tests
    dyaw_rad: float = 0.0  # rotation about the base z axis


def quat_yaw(quat_xyzw: np.ndarray) -> float:
    """Heading of a body's x axis in the base xy plane."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    r00 = 1 - 2 * (y * y + z * z)
    r10 = 2 * (x * y + z * w)
    return float(np.arctan2(r10, r00))


def _yaw_rotate(quat_xyzw: np.ndarray, dyaw_rad: float) -> np.ndarray:
    """Apply a rotation about the base z axis (left-multiply) to an xyzw quaternion."""
    c, s = np.cos(dyaw_rad / 2), np.sin(dyaw_rad / 2)
    x, y, z, w = (float(v) for v in quat_xyzw)
    # (0, 0, s, c) * (x, y, z, w)
    return np.array([c * x - s * y, c * y + s * x, c * z + s * w, c * w - s * z])


def yaw_error(state: PrivilegedState, params: ExpertParams) -> float:
    """Smallest rotation about z that lines the gripper up with the object (modulo its symmetry)."""
    if params.yaw_period_rad <= 0:
        return 0.0
    period = params.yaw_period_rad
    err = quat_yaw(state.object_quat) - quat_yaw(state.eef_quat)
    return float((err + period / 2) % period - period / 2)


def _step_towards(current: np.ndarray, goal: np.ndarray, params: ExpertParams) -> np.ndarray:
    delta = (goal - current) * params.gain
    norm = float(np.linalg.norm(delta))
    if norm > params.max_step_m:
        delta *= params.max_step_m / norm
    return np.asarray(delta)


def is_holding(state: PrivilegedState, params: ExpertParams, touching: bool | None = None) -> bool:
    """The object is between the closed fingers (by touch when available, else by finger width)."""
    near = float(np.linalg.norm(state.object_pos - _grip_point(state, params))) < params.hold_distance_m
    if touching is not None:
        return near and touching
    closed_on_it = state.gripper_width <= state.object_width + params.grip_margin_m
    return near and closed_on_it and state.gripper_width > 0.5 * state.object_width


def _grip_point(state: PrivilegedState, params: ExpertParams) -> np.ndarray:
    """Where the object's centre sits when grasped (the eef shifted by the grasp offset)."""
    return state.eef_pos - np.array([0.0, 0.0, params.grasp_offset_z_m])


def expert_command(state: PrivilegedState, params: ExpertParams, touching: bool | None = None) -> ExpertCommand:
    """One control step of the rule."""
    grasp_eef = state.object_pos + np.array([0.0, 0.0, params.grasp_offset_z_m])
    to_grasp = grasp_eef - state.eef_pos
    xy_err = float(np.linalg.norm(to_grasp[:2]))
    obj_to_target = state.target_pos - state.object_pos
    at_target = float(np.linalg.norm(obj_to_target)) < params.place_tol_m
    holding = is_holding(state, params, touching)
    closing = state.gripper_width < params.open_width_m - 0.01  # fingers not fully open

    if holding and at_target and params.release_at_target:
        return ExpertCommand(np.zeros(3), GRIPPER_OPEN, "release")
    if holding:
        if at_target:
            return ExpertCommand(np.zeros(3), GRIPPER_CLOSED, "hold")
        target_xy_err = float(np.linalg.norm(obj_to_target[:2]))
        carry_z = state.target_pos[2] + params.carry_clearance_m
        if target_xy_err > params.place_tol_m:
            # rise to the carry height first, then travel, so the object clears obstacles
            goal_obj = np.array([state.target_pos[0], state.target_pos[1], max(carry_z, state.object_pos[2])])
            if state.object_pos[2] < carry_z - params.place_tol_m and target_xy_err > 0.05:
                goal_obj = np.array([state.object_pos[0], state.object_pos[1], carry_z])
        else:
            goal_obj = state.target_pos
        return ExpertCommand(_step_towards(state.object_pos, goal_obj, params), GRIPPER_CLOSED, "carry")

    released_near_target = (
        params.release_at_target
        and float(np.linalg.norm(obj_to_target[:2])) < 2 * params.place_tol_m
        and abs(obj_to_target[2]) < params.retreat_m
        and not closing
    )
    if released_near_target:
        goal = np.array([state.eef_pos[0], state.eef_pos[1], state.target_pos[2] + params.retreat_m])
        return ExpertCommand(_step_towards(state.eef_pos, goal, params), GRIPPER_OPEN, "retreat")
    if closing and state.gripper_width < 0.5 * state.object_width:  # closed on nothing: a miss
        return ExpertCommand(np.zeros(3), GRIPPER_OPEN, "open")
    at_grasp = xy_err < params.grasp_tol_m and abs(to_grasp[2]) < params.grasp_tol_m
    if at_grasp or (closing and xy_err < 2 * params.grasp_tol_m and abs(to_grasp[2]) < 2 * params.grasp_tol_m):
        return ExpertCommand(np.zeros(3), GRIPPER_CLOSED, "grasp")
    if closing:  # fingers still closed away from the object: open before moving on
        return ExpertCommand(np.zeros(3), GRIPPER_OPEN, "open")
    yaw_err = yaw_error(state, params)
    dyaw = float(np.clip(yaw_err, -params.max_yaw_step_rad, params.max_yaw_step_rad))
    below_hover = state.eef_pos[2] < grasp_eef[2] + params.approach_height_m - 0.02
    yaw_tol = 3 * params.yaw_tol_rad if below_hover else params.yaw_tol_rad  # hysteresis while descending
    if xy_err > params.grasp_tol_m or abs(yaw_err) > yaw_tol:
        hover = grasp_eef + np.array([0.0, 0.0, params.approach_height_m])
        if state.eef_pos[2] < hover[2] - 0.02 and xy_err > 2 * params.grasp_tol_m:
            goal = np.array([state.eef_pos[0], state.eef_pos[1], hover[2]])  # rise before travelling
        else:
            goal = hover
        if xy_err <= params.grasp_tol_m:
            goal = np.array([grasp_eef[0], grasp_eef[1], max(state.eef_pos[2], hover[2])])  # turn, then descend
        return ExpertCommand(_step_towards(state.eef_pos, goal, params), GRIPPER_OPEN, "approach", dyaw)
    return ExpertCommand(_step_towards(state.eef_pos, grasp_eef, params), GRIPPER_OPEN, "descend", dyaw)


def expert_chunk(
    state: PrivilegedState, params: ExpertParams, horizon: int, touching: bool | None = None
) -> np.ndarray:
    """-> (horizon, 7) float32 bridge actions; steps after the first come from a kinematic rollout."""
    out = np.zeros((horizon, ACTION_DIM), dtype=np.float32)
    current = state
    for t in range(horizon):
        cmd = expert_command(current, params, touching)
        out[t, :3] = cmd.delta_m
        out[t, 5] = cmd.dyaw_rad
        out[t, GRIPPER_INDEX] = cmd.gripper
        held = is_holding(current, params, touching) and cmd.gripper == GRIPPER_CLOSED
        current = replace(
            current,
            eef_pos=current.eef_pos + cmd.delta_m,
            eef_quat=_yaw_rotate(current.eef_quat, cmd.dyaw_rad),
            object_pos=current.object_pos + cmd.delta_m if held else current.object_pos,
        )
    return out
