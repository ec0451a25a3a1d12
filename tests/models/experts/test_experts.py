"""Scripted experts: the rule's phases on synthetic states, and the ActPolicy contract."""

from __future__ import annotations

import numpy as np
import pytest

from models.experts import EXPERT_DEFAULTS, expert_spec, load_expert
from models.experts.pick_place import ExpertParams, expert_chunk, expert_command
from models.interfaces import InputError, Observation
from models.model_kinds import POLICY_KINDS, load_policy
from vtla_contracts.action_layout import ACTION_DESCRIPTION
from vtla_contracts.model_spec import ModelSpec
from vtla_contracts.privileged_state import PROPRIO_DIM, PrivilegedState
from vtla_contracts.tactile_layout import TACTILE_COLS, TACTILE_ROWS, tactile_image

PARAMS = ExpertParams(release_at_target=False, max_step_m=0.03)
IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


def state(eef=(0.0, 0.0, 0.2), width=0.08, obj=(0.1, 0.0, 0.02), target=(0.1, 0.0, 0.15)) -> PrivilegedState:
    return PrivilegedState(
        eef_pos=np.array(eef, dtype=float),
        eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),
        gripper_width=width,
        object_pos=np.array(obj, dtype=float),
        object_quat=np.array([0.0, 0.0, 0.0, 1.0]),
        object_width=0.04,
        target_pos=np.array(target, dtype=float),
    )


def test_approach_moves_towards_the_hover_point_with_the_gripper_open():
    cmd = expert_command(state(), PARAMS)
    assert cmd.phase == "approach" and cmd.gripper == 0.0
    assert cmd.delta_m[0] > 0 and np.linalg.norm(cmd.delta_m) == pytest.approx(0.03)


def test_descend_then_grasp_then_carry_up():
    above = state(eef=(0.1, 0.0, 0.06))
    assert expert_command(above, PARAMS).phase == "descend"
    assert expert_command(above, PARAMS).delta_m[2] < 0
    at_grasp = state(eef=(0.1, 0.0, 0.025))
    assert expert_command(at_grasp, PARAMS).phase == "grasp"
    assert expert_command(at_grasp, PARAMS).gripper == 1.0
    held = state(eef=(0.1, 0.0, 0.025), width=0.041, obj=(0.1, 0.0, 0.025))
    cmd = expert_command(held, PARAMS)
    assert cmd.phase == "carry" and cmd.gripper == 1.0 and cmd.delta_m[2] > 0


def test_a_missed_grasp_opens_again():
    missed = state(eef=(0.1, 0.0, 0.025), width=0.001)
    cmd = expert_command(missed, PARAMS)
    assert cmd.phase == "open" and cmd.gripper == 0.0


def test_release_at_target_for_place_tasks_and_hold_for_lift():
    at_target = state(eef=(0.1, 0.0, 0.15), width=0.041, obj=(0.1, 0.0, 0.15))
    assert expert_command(at_target, PARAMS).phase == "hold"
    place = ExpertParams(release_at_target=True)
    assert expert_command(at_target, place).gripper == 0.0


def test_touch_decides_holding_when_given():
    closed = state(eef=(0.1, 0.0, 0.025), width=0.041, obj=(0.1, 0.0, 0.025))
    assert expert_command(closed, PARAMS, touching=False).phase == "grasp"
    assert expert_command(closed, PARAMS, touching=True).phase == "carry"


def test_yaw_alignment_turns_before_descending():
    s = state(eef=(0.1, 0.0, 0.1))
    yaw = 0.3
    rotated = PrivilegedState(**{**s.__dict__, "object_quat": np.array([0, 0, np.sin(yaw / 2), np.cos(yaw / 2)])})
    cmd = expert_command(rotated, PARAMS)
    assert cmd.phase == "approach" and cmd.dyaw_rad == pytest.approx(PARAMS.max_yaw_step_rad)
    assert cmd.delta_m[2] == pytest.approx(0.0, abs=1e-9)  # no descent while misaligned


def test_chunk_rollout_continues_the_motion():
    chunk = expert_chunk(state(), PARAMS, horizon=5)
    assert chunk.shape == (5, 7) and chunk.dtype == np.float32
    travelled = chunk[:, :3].sum(axis=0)
    assert travelled[0] > 0.05  # five steps along +x, not one step repeated from a stale state
    np.testing.assert_allclose(chunk[0], expert_chunk(state(), PARAMS, horizon=1)[0])


@pytest.mark.parametrize("kind", sorted(EXPERT_DEFAULTS))
def test_every_expert_kind_loads_through_the_registry(kind):
    assert POLICY_KINDS[kind] == "models.experts:load_expert"
    policy = load_policy(ModelSpec(kind=kind, options={"chunk_size": 3}), "cpu", "float32")
    policy.warmup()
    desc = policy.describe()
    assert desc["expert"] is True and desc["random_weights"] is False
    assert desc["action"]["chunk_size"] == 3 and desc["action"]["dim"] == 7
    assert desc["action"]["units"][:3] == ["m", "m", "m"] and desc["proprio"]["dim"] == PROPRIO_DIM
    stats = policy.stats()
    assert stats["mean"] == [0.0] * 7 and stats["std"] == [1.0] * 7
    assert stats["description"] == dict(ACTION_DESCRIPTION)
    assert policy.info.random_weights is False and policy.info.kind == kind


def test_act_returns_batch_by_chunk_by_7():
    policy = load_expert(ModelSpec(kind="expert-lift", options={"chunk_size": 4}), "cpu", "float32")
    obs = [Observation(images={"primary": IMAGE}, proprio=state().pack()),
           Observation(images={"primary": IMAGE}, proprio=state(eef=(0.1, 0.0, 0.025)).pack())]
    for o in obs:
        policy.validate(o)
    out = policy.act(obs)
    assert out.shape == (2, 4, 7) and out.dtype == np.float32
    assert out[0, 0, 6] == 0.0 and out[1, 0, 6] == 1.0  # approach (open) vs grasp (closed)


@pytest.mark.parametrize(
    "proprio", [None, np.zeros(PROPRIO_DIM - 2, np.float32), np.full(PROPRIO_DIM, np.nan, np.float32)]
)
def test_validate_rejects_missing_or_malformed_proprio(proprio):
    policy = load_expert(ModelSpec(kind="expert-lift"), "cpu", "float32")
    with pytest.raises(InputError):
        policy.validate(Observation(images={"primary": IMAGE}, proprio=proprio))


def test_touch_expert_needs_the_tactile_image_and_uses_it():
    policy = load_expert(ModelSpec(kind="expert-touch"), "cpu", "float32")
    closed = state(eef=(0.1, 0.0, 0.037), width=0.041, obj=(0.1, 0.0, 0.025)).pack()
    with pytest.raises(InputError):
        policy.validate(Observation(images={"primary": IMAGE}, proprio=closed))
    cells = TACTILE_ROWS * TACTILE_COLS
    untouched = tactile_image(np.zeros(cells), np.zeros(cells))
    touched = tactile_image(np.full(cells, 0.2), np.full(cells, 0.2))
    out = policy.act([
        Observation(images={"primary": IMAGE}, proprio=closed, tactile_image=untouched),
        Observation(images={"primary": IMAGE}, proprio=closed, tactile_image=touched),
    ])
    assert out[0, 0, 2] == 0.0  # no touch: keep closing in place
    assert out[1, 0, 2] > 0.0  # both pads touch: lift


def test_options_are_checked():
    assert expert_spec("expert-lift", {"max_step_m": 0.01}).params.max_step_m == 0.01
    with pytest.raises(ValueError, match="unknown key"):
        expert_spec("expert-lift", {"max_stepp": 0.01})
    with pytest.raises(ValueError):
        load_expert(ModelSpec(kind="expert-lift", path="/some/ckpt"), "cpu", "float32")
