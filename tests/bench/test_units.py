"""Unit tests of the bench helpers: statistics, report, TOML, null policy (no processes)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from bench.null_policy import NullPolicy, load
from bench.report import Figure, batching_figures, gpu_figures, json_ready, markdown_table, text_table
from bench.stats import ratio, summarize
from bench.toml_writer import to_toml
from bench.transport import server_timing_ms
from models.interfaces import InputError, Observation
from models.model_kinds import load_policy
from vtla_contracts.model_spec import ModelSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_summarize_percentiles_of_known_samples() -> None:
    s = summarize([float(v) for v in range(1, 101)])  # 1..100 ms
    assert s.n == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(50.5)


def test_summarize_empty_is_nan_not_zero() -> None:
    s = summarize([])
    assert s.n == 0 and math.isnan(s.p50_ms) and math.isnan(s.p99_ms)


def test_ratio_guards_missing_values() -> None:
    assert ratio(6.0, 2.0) == 3.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_json_ready_turns_nan_into_null() -> None:
    text = json.dumps(json_ready({"a": math.nan, "b": [1.0, math.inf], "c": (2, "x")}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": [2, "x"]}


def test_toml_writer_round_trips_a_server_config() -> None:
    table = {
        "policy": {"kind": "bench.null_policy:load", "options": {"chunk_size": 4, "cameras": ["primary"]}},
        "vlm": {"enabled": False},
        "batching": {"max_batch": 1, "max_wait_ms": 0.5},
    }
    assert tomllib.loads(to_toml(table)) == table


def test_server_timing_header_parsing() -> None:
    header = "queue;dur=0.125, compute;dur=3.500, server;dur=4.000"
    assert server_timing_ms(header, "compute") == 3.5
    assert server_timing_ms(header, "queue") == 0.125
    assert math.isnan(server_timing_ms(header, "missing"))


def test_null_policy_through_the_registry_returns_zeros_of_the_right_shape() -> None:
    policy = load_policy(ModelSpec("bench.null_policy:load", options={"chunk_size": 3}), "cpu", "float32")
    assert isinstance(policy, NullPolicy)
    obs = Observation(images={"primary": np.zeros((48, 64, 3), np.uint8)})
    policy.validate(obs)
    actions = policy.act([obs, obs])
    assert actions.shape == (2, 3, 7) and actions.dtype == np.float32 and not actions.any()
    assert policy.describe()["action"]["chunk_size"] == 3
    assert policy.info.random_weights  # says plainly its actions mean nothing


def test_null_policy_rejects_bad_input_with_input_error() -> None:
    policy = load(ModelSpec("bench.null_policy:load"), "cpu", "float32")
    with pytest.raises(InputError):
        policy.validate(Observation(images={"primary": np.zeros((8, 8), np.uint8)}))
    with pytest.raises(InputError):
        policy.validate(Observation(images={"left": np.zeros((8, 8, 3), np.uint8)}))


def test_batching_target_is_judged_on_the_scaling_ratio() -> None:
    ratios = {"clients_compared": [32, 1], "on_scaling": 9.0, "off_scaling": 1.0, "on_vs_off_at_top": 9.0}
    point = {
        "clients": 1,
        "throughput_rps": 10.0,
        "latency": {"p50_ms": 1.0, "p99_ms": 2.0},
        "mean_batch_size": 1,
    }
    result = {
        "modes": {"on": [point, {**point, "clients": 32, "throughput_rps": 90.0}]},
        "ratios": ratios,
    }
    figures = batching_figures(result)
    assert figures[0].target == ">= 8x" and figures[0].met is True
    slow = {**result, "ratios": {**ratios, "on_scaling": 3.0}}
    assert batching_figures(slow)[0].met is False


def test_pending_gpu_figures_are_marked_pending_in_both_tables() -> None:
    figures = gpu_figures({"status": "pending", "reason": "no CUDA"})
    assert figures and all(f.measured == "pending" and f.verdict == "pending" for f in figures)
    md = markdown_table(figures)
    rows_md = md.splitlines()[2:]
    assert len(rows_md) == len(figures) and all(r.endswith("| pending |") for r in rows_md)
    rows = [*figures, Figure("x", "y", "1 ms", "<= 2 ms", True, "cmd")]
    assert text_table(rows).splitlines()[-1].endswith("yes")


def test_arrival_replay_scores_the_phase_prediction_better_for_a_clock_and_the_same_otherwise() -> None:
    from bench.arrival_prediction import replay

    clock = replay("clock", 0.01, arrivals=1500, seed=1)  # 1 % of wake-ups 5-15 ms late
    assert clock["policy"]["unanticipated"] < clock["spacing"]["unanticipated"]
    assert clock["policy"]["wait_bound_p99_ms"] < 0.5 * clock["spacing"]["wait_bound_p99_ms"]
    relative = replay("relative", 0.01, arrivals=1500, seed=1)
    assert abs(relative["policy"]["wait_bound_p99_ms"] - relative["spacing"]["wait_bound_p99_ms"]) < 0.5
    assert relative["policy"]["unanticipated"] == relative["spacing"]["unanticipated"] == 0.0


def test_cancellation_steps_are_counted_from_the_close_and_from_the_first_failed_delivery() -> None:
    from bench.engine import cancellation_figures

    # (time s, active slots, decode steps, replies dropped): closed at 1.0; the server's first
    # failed delivery shows at 1.012 (after step 13 ran), every slot is free at 1.020 (step 15)
    samples = [(0.99, 32, 10, 0), (1.004, 32, 11, 0), (1.010, 32, 13, 0), (1.012, 20, 13, 12),
               (1.016, 3, 14, 30), (1.020, 0, 15, 32), (1.030, 0, 15, 32)]
    figures = cancellation_figures(samples, closed_at=1.0, clients=32)
    assert figures["slots_freed"] == 32 and figures["active_at_close"] == 32
    assert figures["decode_steps_to_free"] == 5  # 15 - 10: from the close
    assert figures["decode_steps_from_detection"] == 2  # 15 - 13: from the sample before the first drop
    assert figures["time_to_free_ms"] == pytest.approx(20.0) and figures["detected_after_ms"] == pytest.approx(12.0)
    never = cancellation_figures([(0.99, 4, 1, 0), (1.01, 4, 2, 0)], closed_at=1.0, clients=4)
    assert never["decode_steps_from_detection"] is None and never["time_to_free_ms"] is None
    assert never["slots_freed"] == 0
