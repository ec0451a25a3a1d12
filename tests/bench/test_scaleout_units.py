"""Unit tests of the scale-out benchmark's arithmetic and the fixed-cost policy (no processes)."""

from __future__ import annotations

import math
import time

import numpy as np

from bench.null_policy import load
from bench.report import scaleout_figures
from bench.scaleout import recovery
from models.interfaces import Observation
from vtla_contracts.model_spec import ModelSpec


def test_recovery_is_the_wait_of_the_last_client_and_counts_failed_requests() -> None:
    kill_at = 10.0
    outcomes = [
        (9.0, 0, True), (9.5, 1, True),  # before the kill: not counted as recovery
        (10.2, 1, False),  # failed after the kill: a reply lost
        (10.5, 0, True), (11.0, 1, True), (11.2, 0, True),
    ]
    result = recovery(outcomes, clients=2, kill_at=kill_at)
    assert result["clients_recovered"] == 2
    assert math.isclose(result["all_recovered_s"], 1.0)
    assert result["replies_lost"] == 1 and result["requests"] == 6
    assert math.isnan(recovery(outcomes, clients=3, kill_at=kill_at)["all_recovered_s"])  # one never came back


def test_scaleout_targets_judge_the_endpoint_list_only() -> None:
    points = [
        {"servers": 2, "mode": "list", "throughput_rps": 700.0, "efficiency_vs_linear": 0.95,
         "efficiency_vs_capacity": 0.9},
        {"servers": 4, "mode": "list", "throughput_rps": 1000.0, "efficiency_vs_linear": 0.7,
         "efficiency_vs_capacity": 0.6},
        {"servers": 4, "mode": "proxy", "throughput_rps": 900.0, "efficiency_vs_linear": 0.6,
         "efficiency_vs_capacity": 0.5},
    ]
    figures = scaleout_figures({"options": {"clients": 256}, "points": points,
                                "failover": {"replies_lost": 0, "all_recovered_s": 0.5, "timeout_s": 5.0}})
    assert [f.met for f in figures[:3]] == [True, False, None]
    assert figures[3].met is None and figures[4].met is True  # recovery: context; lost replies: 0 -> met


def test_fixed_cost_null_policy_takes_its_batch_time_whatever_the_batch_size() -> None:
    policy = load(ModelSpec("bench.null_policy:load", options={"batch_ms": 30}), "cpu", "float32")
    obs = Observation(images={"primary": np.zeros((8, 8, 3), np.uint8)})
    for batch in ([obs], [obs] * 16):
        started = time.perf_counter()
        actions = policy.act(batch)
        assert time.perf_counter() - started >= 0.029  # a sleep: never shorter
        assert actions.shape == (len(batch), 1, 7)
    assert policy.describe()["batch_ms"] == 30.0
