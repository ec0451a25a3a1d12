"""bench/gpu_direct.py's measuring code on CPU with the tiny presets (its GPU figures need CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu_direct import main


@pytest.mark.slow
def test_gpu_direct_runs_on_cpu_and_checks_graph_vs_eager(tmp_path: Path) -> None:
    out = tmp_path / "direct.json"
    argv = ["--device", "cpu", "--dtype", "float32", "--vtla-preset", "tiny", "--vlm-preset", "tiny"]
    argv += ["--act-iters", "5", "--batch", "4", "--streams", "3", "--max-tokens", "6", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["act"]["batch1_ms"]["p50_ms"] > 0
    assert result["act"]["throughput_obs_s_at_4"] > 0
    assert result["act"]["batched_vs_alone_max_abs"] < 1e-4
    moondream = result["moondream"]
    assert moondream["generated_tokens"] > 0 and moondream["tokens_per_s_3_streams"] > 0
    assert moondream["graph_vs_eager_text_equal"] is True  # on CPU both paths are eager: the check runs
    assert moondream["graph_vs_eager_boxes_equal"] is True
    assert result["memory"]["moondream"]["kv_cache_bytes"] > 0
    checks = result["vtla_checks"]
    assert checks["graph_vs_eager_max_abs"] < 1e-5  # on CPU both are eager over other buffers
    admission = result["admission"]
    assert admission["batched"]["vision_forwards"] < admission["one_at_a_time"]["vision_forwards"]
    assert admission["batched"]["prefill_forwards"] <= admission["one_at_a_time"]["prefill_forwards"]
    assert admission["device_resize_vs_reference_levels"]["max"] < 64
    assert result["act_during_decode"]["act_ms_during_decode"]["p50_ms"] > 0
