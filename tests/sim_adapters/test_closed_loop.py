"""Real closed loops: the inference server serving a scripted expert, simulators driven over ZeroMQ."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.client import BridgeClient
from bridge.config import load_config, with_overrides
from bridge.server import InferenceServer
from models.experts import load_expert
from models.interfaces import Observation
from sim_adapters.interface import AdapterSettings
from sim_adapters.runner import RunSettings, main, run_episodes
from tests.sim_adapters.servers import CONFIGS, start_server
from vtla_contracts.model_spec import ModelSpec
from vtla_contracts.tactile_layout import pad_forces_n

pytestmark = pytest.mark.sim

LIFT_EPISODES = 10


@pytest.fixture(scope="module")
def lift_adapter() -> Iterator[Any]:
    pytest.importorskip("robosuite", reason="pip install robosuite==1.5.2 mujoco==3.3.7")
    from sim_adapters.robosuite_adapter import RobosuiteAdapter

    adapter = RobosuiteAdapter(AdapterSettings(task="Lift", image_size=(64, 64)))
    yield adapter
    adapter.close()


def test_robosuite_action_mapping_moves_the_real_arm(lift_adapter):
    """+x metres in bridge units moves the end effector +x; gripper 1 closes the fingers."""
    lift_adapter.reset(seed=0)
    before = lift_adapter.privileged_state()
    for _ in range(5):
        lift_adapter.apply(np.array([0.02, 0, 0, 0, 0, 0, 0.0], dtype=np.float32))
    moved = lift_adapter.privileged_state()
    dx, dy, dz = moved.eef_pos - before.eef_pos
    assert dx > 0.015 and abs(dy) < dx / 4 and abs(dz) < dx / 4  # the OSC tracks with some lag
    assert moved.gripper_width > 0.06  # 0 = open
    for _ in range(8):
        lift_adapter.apply(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
    assert lift_adapter.privileged_state().gripper_width < moved.gripper_width - 0.03  # 1 = closed
    image = lift_adapter.observe().images["agentview"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # flipped to top-row-first: the table (bright, lower half) is below the darker background
    assert image[48:].mean() != pytest.approx(image[:16].mean(), abs=1.0)


def test_robosuite_lift_expert_over_zeromq(lift_adapter):
    server = start_server("robosuite-lift-expert.toml")
    try:
        with BridgeClient(server.endpoint, timeout_s=30.0) as client:
            hello = client.hello()
            assert any(m.get("expert") for m in hello["models"].values())
            out = run_episodes(lift_adapter, client, RunSettings(episodes=LIFT_EPISODES, rate_hz=0.0))
    finally:
        server.stop()
    summary = out.summary
    assert summary["episodes"] == LIFT_EPISODES
    assert summary["success_rate"] >= 0.9, summary["per_episode"]
    assert summary["queries"] == summary["steps"]  # chunk size 1: one query per control step
    for name in ("round_trip", "server", "transport"):
        lat = summary["latency_ms"][name]
        assert math.isfinite(lat["p50"]) and lat["p99"] >= lat["p50"] >= 0.0
    assert summary["latency_ms"]["round_trip"]["p50"] >= summary["latency_ms"]["server"]["p50"]


class RecordingPolicy:
    """The real touch expert, remembering what reached the server."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[Observation] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        self.seen.extend(batch)
        return self.inner.act(batch)


def test_touch_scene_tactile_changes_on_contact_and_reaches_the_server(tmp_path):
    pytest.importorskip("mujoco", reason="pip install mujoco==3.3.7")
    from sim_adapters.mujoco_touch import TouchAdapter

    recorder = RecordingPolicy(load_expert(ModelSpec(kind="expert-touch"), "cpu", "float32"))
    server = start_server("touch-expert.toml", load_policy=lambda *a: recorder)
    adapter = TouchAdapter(AdapterSettings(task="lift", image_size=(64, 64)))
    try:
        with BridgeClient(server.endpoint, timeout_s=30.0) as client:
            out = run_episodes(adapter, client, RunSettings(episodes=2, rate_hz=0.0))
    finally:
        adapter.close()
        server.stop()
    assert out.summary["success_rate"] == 1.0
    first = recorder.seen[0]
    assert first.tactile_image is not None and first.force_torque is not None
    assert pad_forces_n(first.tactile_image) == (0.0, 0.0)  # no contact at the start
    pressed = [o for o in recorder.seen if o.tactile_image is not None and min(pad_forces_n(o.tactile_image)) > 0.5]
    assert pressed, "no request carried finger-pad contact"
    ft = np.stack([o.force_torque for o in recorder.seen if o.force_torque is not None])
    assert np.ptp(ft[:, 2]) > 0.1  # the wrist's vertical force changes while grasping and lifting


def test_run_sim_cli_writes_json_and_gif(tmp_path):
    pytest.importorskip("mujoco", reason="pip install mujoco==3.3.7")
    pytest.importorskip("imageio", reason="pip install imageio")
    server = start_server("touch-expert.toml", policy={"options": {"chunk_size": 4}})  # chunks to ensemble
    json_path, gif_path = tmp_path / "run.json", tmp_path / "episode.gif"
    try:
        code = main(["touch", "--task", "lift", "--episodes", "2", "--server", server.endpoint, "--rate-hz", "0",
                     "--image-size", "48", "--json", str(json_path), "--video", str(gif_path), "--no-progress",
                     "--temporal-ensemble"])
    finally:
        server.stop()
    assert code == 0
    summary = json.loads(json_path.read_text())
    assert summary["episodes"] == 2 and summary["successes"] == 2 and summary["success_rate"] == 1.0
    assert summary["chunking"]["temporal_ensemble"] is True
    assert summary["queries"] == summary["steps"]  # ensembling queries every control step
    assert set(summary["latency_ms"]["round_trip"]) >= {"p50", "p99"}
    assert gif_path.stat().st_size > 1000


def test_fetch_pick_and_place_expert_over_zeromq():
    pytest.importorskip("gymnasium_robotics", reason="pip install gymnasium-robotics==1.4.2")
    from sim_adapters.fetch_adapter import FetchAdapter

    server = start_server("fetch-expert.toml")
    adapter = FetchAdapter(AdapterSettings(task="PickAndPlace", image_size=(64, 64)))
    try:
        with BridgeClient(server.endpoint, timeout_s=30.0) as client:
            out = run_episodes(adapter, client, RunSettings(episodes=4, rate_hz=0.0))
    finally:
        adapter.close()
        server.stop()
    assert out.summary["success_rate"] >= 0.75, out.summary["per_episode"]


def test_run_sim_drives_the_vtla_policy_too(tmp_path: Path) -> None:
    """The default server (tiny VTLA, random weights) refuses proprio: run-sim sends only what the
    policy's hello entry declares, so the same robosuite adapter drives the learned policy."""
    pytest.importorskip("robosuite", reason="pip install robosuite==1.5.2 mujoco==3.3.7")
    config = with_overrides(load_config(CONFIGS / "default.toml"), server={"bind": "tcp://127.0.0.1:*"},
                            vlm={"enabled": False})
    server = InferenceServer(config)
    server.start()
    assert server.wait_ready(60), server.loop.state.detail
    out_json = tmp_path / "vtla.json"
    try:
        code = main(["robosuite", "--task", "Lift", "--episodes", "1", "--max-steps", "6", "--image-size", "64",
                     "--server", server.endpoint, "--rate-hz", "0", "--json", str(out_json), "--no-progress"])
        counters = server.loop.state.counters
    finally:
        server.stop()
    assert code == 0
    summary = json.loads(out_json.read_text())
    assert summary["episodes"] == 1
    assert counters["act_requests"] >= 2  # 6 steps of 4-step chunks: the VTLA answered every query
