"""Smoke test of the benchmarks with tiny sizes: real server processes, real sockets, real numbers.

Asserts on the structure and sanity of what the benchmarks produce (not on speed: speed is what
``vtla-bridge bench`` reports). Kept under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.batching import BatchingOptions, run_batching
from bench.control import ControlOptions, run_control
from bench.gpu import GpuOptions, run_gpu
from bench.plots import plot
from bench.processes import NULL_POLICY_KIND, http_companion_available
from bench.report import figures_for, write_json
from bench.run_benchmarks import main
from bench.transport import TransportOptions, run_transport

pytestmark = pytest.mark.timeout(120)


def _sane_summary(summary: dict[str, float], n: int) -> None:
    assert summary["n"] == n
    assert 0.0 < summary["min_ms"] <= summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["max_ms"] < 10_000.0  # a loopback request that takes 10 s is a hang, not a number


def test_transport_quick_measures_each_variant_in_the_same_run(tmp_path: Path) -> None:
    variants: tuple[str, ...] = ("zmq_echo", "bridge_null")
    if http_companion_available():
        variants += ("http_jpeg_uri",)
    options = TransportOptions(sizes=("224x224",), rounds=12, warmup_rounds=2, variants=variants)
    result = run_transport(options, tmp_path / "logs", progress=False)
    size = result["sizes"]["224x224"]
    assert size["frame_bytes"] == 224 * 224 * 3
    for name in variants:
        entry = size[name]
        _sane_summary(entry["round_trip"], 12)
        assert len(entry["round_trip_ms"]) == 12
        # overhead never exceeds the round trip it is part of
        assert entry["overhead"]["p50_ms"] <= entry["round_trip"]["p50_ms"] + 1e-9
    null = size["bridge_null"]
    assert null["compute"]["max_ms"] < 5.0  # the null policy does no work
    assert 0.0 <= null["server_queue"]["p50_ms"] <= null["round_trip"]["p50_ms"]
    assert null["outside_server"]["p50_ms"] > 0.0
    ratios = size["ratios"]
    assert ratios["bridge_null_overhead_vs_echo"] > 0.0
    assert math.isnan(ratios["bridge_vtla_overhead_vs_echo"])  # not measured in this run
    assert result["servers"]["null"]["null"]["random_weights"] is True
    figures = figures_for("transport", {**result, "status": "ok"})
    judged = [f for f in figures if f.target == "<= 2x echo"]
    assert len(judged) == 1 and judged[0].met in (True, False)
    write_json(tmp_path / "transport.json", result)
    assert (
        json.loads((tmp_path / "transport.json").read_text())["sizes"]["224x224"]["zmq_echo"]["round_trip"][
            "n"
        ]
        == 12
    )
    (png,) = plot("transport", result, tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_batching_quick_with_client_processes(tmp_path: Path) -> None:
    options = BatchingOptions(
        clients=(1, 3),
        duration_s=0.6,
        warmup_s=0.1,
        repeats=1,
        policy=(("kind", NULL_POLICY_KIND),),
        frame_hw=(32, 32),
    )
    result = run_batching(options, tmp_path / "logs", progress=False)
    assert set(result["modes"]) == {"on", "off"}
    for mode, points in result["modes"].items():
        assert [p["clients"] for p in points] == [1, 3]
        for p in points:
            assert p["errors"] == {}
            assert p["completed"] > 0 and p["throughput_rps"] > 0.0
            assert p["latency"]["n"] == p["completed"]
            assert 1.0 <= p["mean_batch_size"] <= (1.0 if mode == "off" else 3.0)
    assert result["ratios"]["clients_compared"] == [3, 1]
    assert result["ratios"]["on_scaling"] > 0.0
    (png,) = plot("batching", result, tmp_path)
    assert png.stat().st_size > 1000


def test_control_quick_alternates_idle_and_loaded_windows(tmp_path: Path) -> None:
    options = ControlOptions(
        streams=2, rate_hz=40.0, window_s=0.8, repeats=2, ramp_s=0.3, max_tokens=8, caption_frame_hw=(64, 64)
    )
    result = run_control(options, tmp_path / "logs", progress=False)
    assert set(result["models"]) >= {"vtla"} and len(result["models"]) == 2  # policy + VLM loaded
    for phase in ("idle", "loaded"):
        entry = result["act"][phase]
        n = entry["round_trip"]["n"]
        assert 10 <= n <= 2 * 0.8 * 40 + 2  # the client keeps its rate, never bursts
        _sane_summary(entry["round_trip"], n)
        assert entry["queue"]["p50_ms"] <= entry["round_trip"]["p50_ms"]
    captions = result["captions"]
    assert captions["captions"] > 0 and captions["errors"] == {}
    assert captions["ttft"]["n"] > 0 and captions["tokens_per_s"] > 0.0
    assert result["ratios"]["p99_loaded_vs_idle"] > 0.0
    (png,) = plot("control", result, tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_gpu_benchmark_code_path_runs_on_cpu_with_tiny_models(tmp_path: Path) -> None:
    """The GPU benchmark's measuring code, exercised where no GPU exists (tiny presets, fp32)."""
    options = GpuOptions(
        vtla_preset="tiny",
        vlm_preset="tiny",
        dtype="float32",
        device="cpu",
        act_iters=8,
        clients=3,
        throughput_s=0.5,
        caption_streams=(1, 2),
        caption_window_s=0.5,
        max_tokens=8,
        frame_hw=(64, 64),
        ready_timeout_s=120.0,
    )
    result = run_gpu(options, tmp_path / "logs", progress=False)
    _sane_summary(result["act_batch1"]["round_trip"], 8)
    assert result["act_clients"]["clients"] == 3 and result["act_clients"]["throughput_rps"] > 0.0
    assert set(result["captions"]) == {"1", "2"}
    for level in result["captions"].values():
        assert level["captions"] > 0 and level["tokens_per_s"] > 0.0 and level["errors"] == {}
    assert result["memory"]["resident_gb"] is None  # CPU: no CUDA memory to report
    figures = figures_for("gpu", {**result, "status": "ok"})
    assert [f.target for f in figures[:3]] == ["<= 8 ms", ">= 300 obs/s", "<= 12 GB"]
    assert figures[2].met is None  # memory not measured on CPU: no verdict, not a fake "yes"


def test_gpu_benchmark_refuses_clearly_without_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the refusal path does not apply")
    code = main(["gpu", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    captured = capsys.readouterr()
    assert "needs a CUDA device" in captured.err
    assert "pending" in captured.out  # the table marks the GPU figures pending
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["status"] == "pending"
    assert (tmp_path / "table.md").read_text().count("pending") >= 4


def test_engine_quick_with_the_simulated_presets(tmp_path: Path) -> None:
    from bench.engine import EngineOptions, run_engine

    options = EngineOptions(
        clients=(1, 8), caption_streams=(2,), generation_streams=2, saturating_clients=8, vanishing_clients=4,
        warmup_s=0.2, duration_s=0.8, latency_duration_s=0.8,  # (the p99 stages' 12 s windows: 100 s here)
    )
    result = run_engine(options, tmp_path / "logs", progress=False)
    assert result["simulated"]["device"] == "NVIDIA H200 SXM"
    for point in result["batching"]:
        assert point["throughput_rps"] > 0 and 0 < point["efficiency"] <= 1.2  # the cost model bounds it
        assert point["errors"] == {}
    assert result["control"]["idle"]["act"]["n"] > 0 and result["control"]["streams_2"]["act"]["n"] > 0
    assert result["generation"]["alone_tokens_per_s"] > 0 and result["generation"]["loaded_tokens_per_s"] > 0
    cancel = result["cancellation"]
    assert cancel["active_at_close"] == 4 and cancel["slots_freed"] == 4 and cancel["time_to_free_ms"] is not None
    assert cancel["detected_after_ms"] is not None  # the vanished clients' chunks could not be delivered
    assert result["fairness"]["alone"]["n"] > 0 and result["fairness"]["next_to_flooder"]["n"] > 0
    names = [f.name for f in figures_for("engine", result)]
    assert "polite 10 Hz client p99 next to a flooder vs alone" in names
    write_json(tmp_path / "engine.json", result)
