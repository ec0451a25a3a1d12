"""ManiSkill3 (SAPIEN, lavapipe on CPU) in its own venv, driven over ZeroMQ by expert-maniskill."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim_adapters.servers import start_server
from tests.sim_adapters.venvs import probe, run_sim

pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(900)]

TASK = "PickCube-v1"


def test_maniskill_every_axis_moves_the_real_tcp_the_commanded_way():
    """6 steps of +1 cm along x/y/z and +0.05 rad about roll/pitch/yaw (bridge units): the TCP
    moves and turns positively about that base axis (the rotation was inverted before the fix)."""
    axes = probe("maniskill", "axes", 600, "maniskill", TASK)
    for i, name in enumerate(("x", "y", "z")):
        moved = axes[name]["dpos_m"]
        assert moved[i] > 0.015 and all(abs(moved[j]) < moved[i] / 4 for j in range(3) if j != i), (name, moved)
    for i, name in enumerate(("roll", "pitch", "yaw")):
        turned = axes[name]["drot_rad"]
        assert turned[i] > 0.05, (name, turned)  # commanded +0.3 rad in total; the controller lags
        assert all(abs(turned[j]) < turned[i] / 4 for j in range(3) if j != i), (name, turned)
        assert max(abs(v) for v in axes[name]["dpos_m"]) < 0.01, (name, axes[name])
    assert axes["gripper"]["closed_m"] < axes["gripper"]["open_m"] - 0.03


def test_maniskill_pickcube_expert_over_zeromq(tmp_path: Path):
    server = start_server("maniskill-pickcube-expert.toml")
    try:
        summary = run_sim("maniskill", server.endpoint, TASK, 3, tmp_path / "run.json", "--image-size", "64",
                          timeout_s=900)
    finally:
        server.stop()
    assert summary["episodes"] == 3
    assert summary["success_rate"] >= 2 / 3, summary["per_episode"]
