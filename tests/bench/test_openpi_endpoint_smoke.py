"""Smoke test of bench/openpi_endpoint.py at tiny sizes: real server and endpoint processes,
the real openpi-client. Asserts on the structure and sanity of the figures, not on speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.openpi_endpoint import run

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,  # ~45 s: four processes start
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"),
]


def test_openpi_endpoint_benchmark_runs_every_variant(tmp_path: Path) -> None:
    result = run(rounds=12, clients=3, forward_ms=30.0, work_dir=tmp_path / "logs")
    for key in ("zmq_act", "openpi_ws"):
        summary = result[key]
        assert summary["n"] == 12 and 0.0 < summary["p50_ms"] <= summary["max_ms"] < 10_000.0
    together, alone = result["openpi_ws_3"], result["openpi_ws_1_timed"]
    assert together["latency_ms"]["n"] == 3 * 10 and alone["latency_ms"]["n"] == 10
    assert alone["batch_size_max"] == 1 and 1 <= together["batch_size_mean"] <= together["batch_size_max"] <= 3
    assert together["observations_per_s"] > 0 and alone["observations_per_s"] > 0
