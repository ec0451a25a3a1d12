"""Benchmark 4: real-size models on a GPU — ``nano-2b`` VTLA + real-size Moondream, random weights, bf16.

Measures, through the bridge as clients see it:

* ``act`` latency at batch 1 (one client, sequential requests, 640x480 frames);
* ``act`` throughput with 64 concurrent client processes (closed loop);
* Moondream TTFT and tokens/s with 1, 8 and 32 caption streams;
* GPU memory with both models resident (the server's ``health.gpu_memory_gb``, i.e.
  ``torch.cuda.memory_allocated``; plus the process's total from ``nvidia-smi`` when present),
  and each model's memory budget from ``hello`` (weights, KV cache, largest activation).

``max_sequences`` is set to the largest stream count measured. The peak
(``torch.cuda.max_memory_allocated``) and the CUDA-graph-vs-eager checks are measured in-process
by :mod:`bench.gpu_direct`; ``bench/gpu_check.sh`` runs both.

Refuses to run without CUDA (:class:`GpuUnavailable`): CPU figures for these sizes say nothing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.caption_load import CaptionCommand, CaptionLoad, span_s, summarize_captions
from bench.client_pool import ClientPool, LoadCommand, aggregate
from bench.frames import scene_frame
from bench.processes import ServerProcess, server_table
from bench.stats import summarize
from bridge.client import BridgeClient

logger = logging.getLogger(__name__)

MOONDREAM_REAL_PRESET = "moondream2-2025-04-14"


class GpuUnavailable(RuntimeError):
    """No CUDA device here: the GPU benchmark does not run (its figures stay pending)."""


@dataclass(frozen=True)
class GpuOptions:
    vtla_preset: str = "nano-2b"
    vlm_preset: str = MOONDREAM_REAL_PRESET
    dtype: str = "bfloat16"
    device: str = "cuda"
    act_iters: int = 200
    clients: int = 64
    throughput_s: float = 10.0
    caption_streams: tuple[int, ...] = (1, 8, 32)
    caption_window_s: float = 10.0
    max_tokens: int = 128
    frame_hw: tuple[int, int] = (480, 640)
    context: int = 1024  # KV positions per slot: 730 image prefix + prompt + max_tokens fit
    ready_timeout_s: float = 900.0  # random init + warm-up of two ~2 B models
    timeout_s: float = 120.0


def require_cuda() -> str:
    """The CUDA device name; raises :class:`GpuUnavailable` when torch sees no CUDA device."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise GpuUnavailable(f"torch is not importable: {exc}") from exc
    if not torch.cuda.is_available():
        raise GpuUnavailable(
            "the GPU benchmark needs a CUDA device and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); its figures stay pending"
        )
    name: str = torch.cuda.get_device_name(0)
    return name


def _nvidia_smi_used_mb(pid: int | None) -> float | None:
    """GPU memory nvidia-smi attributes to ``pid`` (context + allocator cache included)."""
    exe = shutil.which("nvidia-smi")
    if exe is None or pid is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            try:
                return float(fields[1])
            except ValueError:
                return None
    return None  # in a container nvidia-smi may not see the pid


def run_gpu(options: GpuOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Measure on ``options.device``; a CUDA device is required unless the options name another
    device explicitly (the tests run this code path on CPU with the tiny presets)."""
    device_name = require_cuda() if options.device.startswith("cuda") else options.device
    table = server_table(
        policy={"kind": "vtla", "preset": options.vtla_preset},
        # as many KV slots as the most streams measured, else 32 streams queue behind 8 slots
        vlm={
            "enabled": True,
            "kind": "moondream",
            "preset": options.vlm_preset,
            "options": {"max_sequences": max(options.caption_streams), "context": options.context},
        },
        device={"device": options.device, "dtype": options.dtype},
    )
    torch_threads = None if options.device.startswith("cuda") else 1
    result: dict[str, Any] = {"options": {**options.__dict__}, "device_name": device_name}
    with ExitStack() as stack:
        server = ServerProcess("gpu-server", table, work_dir, torch_threads).launch()
        stack.callback(server.stop)
        pool = stack.enter_context(ClientPool(options.clients))
        load = stack.enter_context(CaptionLoad())
        server.wait_ready(options.ready_timeout_s)
        result["models"] = dict(server.hello.get("models", {}))
        result["memory_budget"] = {
            name: entry.get("memory") for name, entry in result["models"].items() if isinstance(entry, dict)
        }
        result["memory"] = {
            "resident_gb": server.health.get("gpu_memory_gb"),
            "process_nvidia_smi_mb": _nvidia_smi_used_mb(server.pid),
        }
        client = stack.enter_context(BridgeClient(server.endpoint, timeout_s=options.timeout_s))
        frame = scene_frame(*options.frame_hw, seed=3)
        for _ in range(10):
            client.act(image=frame)
        latencies, computes = [], []
        for _ in tqdm(range(options.act_iters), desc="gpu act b=1", file=sys.stderr, disable=not progress):
            reply = client.act(image=frame)
            latencies.append(reply.round_trip_ms)
            computes.append(float(reply.timing.get("compute_ms", float("nan"))))
        result["act_batch1"] = {
            "round_trip": summarize(latencies).as_dict(),
            "compute": summarize(computes).as_dict(),
        }
        command = LoadCommand(
            endpoint=server.endpoint,
            frame_hw=options.frame_hw,
            start_at=time.monotonic() + 0.5,
            warmup_s=2.0,
            duration_s=options.throughput_s,
            timeout_s=options.timeout_s,
        )
        point = aggregate([pool.run(options.clients, command)], options.throughput_s)
        point.pop("latencies_ms")
        result["act_clients"] = point
        captions: dict[str, Any] = {}
        for streams in tqdm(
            options.caption_streams, desc="gpu captions", file=sys.stderr, disable=not progress
        ):
            start_at = time.monotonic() + 0.2
            load.begin(
                CaptionCommand(
                    endpoint=server.endpoint,
                    streams=streams,
                    start_at=start_at,
                    end_at=start_at + options.caption_window_s,
                    frame_hw=options.frame_hw,
                    max_tokens=options.max_tokens,
                    timeout_s=options.timeout_s,
                )
            )
            window = load.collect()
            captions[str(streams)] = summarize_captions(window, span_s(window))
        result["captions"] = captions
        health = client.health()
        result["memory"]["after_load_gb"] = health.get("gpu_memory_gb")
        result["memory"]["process_nvidia_smi_after_mb"] = _nvidia_smi_used_mb(server.pid)
    return result
