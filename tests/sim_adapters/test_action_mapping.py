"""The explicit maps from the bridge's physical action to each simulator's native command."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim_adapters.action_mapping import (
    ROBOSUITE_OSC_SCALING,
    axis_angle_to_rpy,
    bridge_to_fetch,
    bridge_to_maniskill,
    bridge_to_robosuite,
    quat_to_rpy,
    robosuite_to_bridge,
    rpy_to_axis_angle,
    rpy_to_quat,
)


def act(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, gripper=0.0) -> np.ndarray:
    return np.array([dx, dy, dz, droll, dpitch, dyaw, gripper], dtype=np.float32)


def test_robosuite_translation_scale_is_5cm_per_unit():
    native = bridge_to_robosuite(act(dx=0.05, dy=-0.025, dz=0.01))
    np.testing.assert_allclose(native[:3], [1.0, -0.5, 0.2], atol=1e-6)


def test_robosuite_rotation_scale_is_half_radian_per_unit_as_axis_angle():
    np.testing.assert_allclose(bridge_to_robosuite(act(dyaw=0.25))[3:6], [0.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(bridge_to_robosuite(act(droll=-0.1))[3:6], [-0.2, 0.0, 0.0], atol=1e-6)


def test_robosuite_gripper_minus_one_open_plus_one_closed():
    assert bridge_to_robosuite(act(gripper=0.0))[6] == -1.0
    assert bridge_to_robosuite(act(gripper=1.0))[6] == 1.0
    assert bridge_to_robosuite(act(gripper=0.5))[6] == 0.0


def test_robosuite_clips_out_of_range_commands():
    native = bridge_to_robosuite(act(dx=0.2, dz=-0.3, dyaw=2.0, gripper=3.0))
    assert native[0] == 1.0 and native[2] == -1.0 and native[5] == 1.0 and native[6] == 1.0


def test_fetch_gripper_sign_is_opposite_to_robosuite():
    assert bridge_to_fetch(act(gripper=0.0))[3] == 1.0  # Fetch: +1 opens
    assert bridge_to_fetch(act(gripper=1.0))[3] == -1.0
    np.testing.assert_allclose(bridge_to_fetch(act(dx=0.05, dy=0.01))[:3], [1.0, 0.2, 0.0], atol=1e-6)


def test_maniskill_scales_10cm_and_tenth_radian():
    native = bridge_to_maniskill(act(dx=0.05, dyaw=0.05, gripper=1.0))
    np.testing.assert_allclose(native[:6], [0.5, 0, 0, 0, 0, -0.5], atol=1e-6)  # rotation sign flipped
    assert native[6] == -1.0


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan)])
def test_rejects_malformed_actions(bad):
    with pytest.raises(ValueError):
        bridge_to_robosuite(bad)


def test_rpy_quaternion_convention_is_z_y_x_fixed_axes():
    # yaw 90 deg maps x onto y
    q = rpy_to_quat(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(q, [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)], atol=1e-9)
    np.testing.assert_allclose(quat_to_rpy(q), [0, 0, np.pi / 2], atol=1e-9)


small_angle = st.floats(-0.45, 0.45)


@given(small_angle, small_angle, small_angle)
def test_rpy_axis_angle_round_trip(roll, pitch, yaw):
    rpy = np.array([roll, pitch, yaw])
    np.testing.assert_allclose(axis_angle_to_rpy(rpy_to_axis_angle(rpy)), rpy, atol=1e-9)


@given(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05), small_angle, st.floats(0, 1))
def test_robosuite_round_trip_within_range(dx, dz, dyaw, gripper):
    a = act(dx=dx, dz=dz, dyaw=dyaw, gripper=gripper)
    back = robosuite_to_bridge(bridge_to_robosuite(a, ROBOSUITE_OSC_SCALING))
    np.testing.assert_allclose(back, a, atol=1e-5)
