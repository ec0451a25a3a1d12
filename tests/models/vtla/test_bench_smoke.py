"""bench/bench_vtla.py runs and reports every batch size (one iteration; no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bench_vtla import main


def test_bench_reports_each_batch(tmp_path: Path) -> None:
    out = tmp_path / "vtla.json"
    argv = ["--preset", "tiny", "--device", "cpu", "--batches", "1,3", "--iters", "2", "--warmup", "1"]
    assert main([*argv, "--tactile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["results"]] == [1, 3]
    for row in report["results"]:
        assert row["p50_ms"] > 0 and row["obs_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert report["parameters"] > 0 and report["dtype"] == "float32"
