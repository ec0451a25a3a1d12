"""Meta-World in its own venv, driven over ZeroMQ by the in-process server serving its expert."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim_adapters.servers import start_server
from tests.sim_adapters.venvs import probe, run_sim

pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(600)]

TASK = "pick-place-v3"


def test_metaworld_axes_and_gripper_on_the_real_env():
    """+x/+y/+z metres move the TCP along that axis (6 steps of 1 cm; the mocap lags a little);
    rotations are ignored (the env fixes the hand); gripper 1 closes."""
    axes = probe("metaworld", "axes", 300, "metaworld", TASK)
    for i, name in enumerate(("x", "y", "z")):
        moved = axes[name]["dpos_m"]
        assert moved[i] > 0.02, (name, moved)
        assert all(abs(moved[j]) < moved[i] / 4 for j in range(3) if j != i), (name, moved)
    for name in ("roll", "pitch", "yaw"):
        assert max(abs(v) for v in axes[name]["dpos_m"]) < 0.005 and max(map(abs, axes[name]["drot_rad"])) < 1e-6
    assert axes["gripper"]["closed_m"] < axes["gripper"]["open_m"] - 0.03


def test_metaworld_sends_every_requested_camera_upright():
    out = probe("metaworld", "cameras", 300, "metaworld", TASK, "corner,corner2,behindGripper,topview")
    images = out["images"]
    assert sorted(images) == ["behindGripper", "corner", "corner2", "topview"]
    for name, image in images.items():
        assert image["shape"] == [48, 64, 3] and image["dtype"] == "uint8", name
    for name in ("corner", "corner2", "behindGripper"):  # the empty background above, the table below
        assert images[name]["top_mean"] + 20 < images[name]["bottom_mean"], (name, images[name])
    assert out["proprio_dim"] == 19 and "puck" in out["instruction"]


@pytest.mark.parametrize(("task", "episodes"), [(TASK, 3), ("push-v3", 3)])
def test_metaworld_expert_over_zeromq(tmp_path: Path, task: str, episodes: int):
    server = start_server("metaworld-pick-place-expert.toml")
    try:
        summary = run_sim("metaworld", server.endpoint, task, episodes, tmp_path / "run.json",
                          "--image-size", "64", "--cameras", "corner,gripperPOV")
        counters = dict(server.loop.state.counters)
    finally:
        server.stop()
    assert summary["episodes"] == episodes
    assert summary["success_rate"] == 1.0, summary["per_episode"]
    assert counters["act_requests"] >= summary["queries"] > 0  # every query reached this server
