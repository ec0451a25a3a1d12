"""VTLA forward latency and throughput by batch size, with memory.

Times ``VTLAPolicy.act`` end to end as the server calls it (host images -> preprocessing on the
device -> one forward -> de-normalised actions back on the host), for each batch size:
p50/p99 ms per forward and observations/s at the p50. Memory: peak
``torch.cuda.max_memory_allocated`` on CUDA; process peak RSS and parameter bytes on CPU.

    python -m bench.bench_vtla --preset tiny --device cpu --batches 1,8,32,64 --iters 50
    python -m bench.bench_vtla --preset nano-2b --device cuda --batches 1,8,32,64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.stats import summarize
from models.interfaces import Observation
from models.vtla.serving import VTLAPolicy, load_policy
from vtla_contracts.model_spec import ModelSpec

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "pick up the red cube",
    "stack the green block on the blue one",
    "open the drawer",
    "push left",
)


def make_batch(batch_size: int, frame_hw: tuple[int, int], tactile: bool, seed: int = 0) -> list[Observation]:
    """Distinct frames and instructions (as concurrent clients would send), same shapes."""
    rng = np.random.default_rng(seed)
    h, w = frame_hw
    batch = []
    for i in range(batch_size):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ft = rng.normal(size=6).astype(np.float32) if tactile else None
        batch.append(Observation(images={"primary": image}, instruction=INSTRUCTIONS[i % 4], force_torque=ft))
    return batch


def time_batch(policy: VTLAPolicy, batch: list[Observation], iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        policy.act(batch)
    samples_ms = []
    for _ in range(iters):
        start = time.perf_counter()
        policy.act(batch)  # ends with a device -> host copy: the time includes the whole forward
        samples_ms.append((time.perf_counter() - start) * 1e3)
    return samples_ms


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    policy = load_policy(ModelSpec(kind="vtla", preset=args.preset), args.device, dtype)
    load_s = time.perf_counter() - start
    param_bytes = sum(p.numel() * p.element_size() for p in policy.model.parameters())
    frame_hw = tuple(int(v) for v in args.frame.split("x"))
    assert len(frame_hw) == 2
    results = []
    for batch_size in [int(b) for b in args.batches.split(",")]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = make_batch(batch_size, (frame_hw[0], frame_hw[1]), args.tactile)
        summary = summarize(time_batch(policy, batch, args.iters, args.warmup))
        row: dict[str, Any] = {
            "batch": batch_size,
            "p50_ms": round(summary.p50_ms, 3),
            "p99_ms": round(summary.p99_ms, 3),
            "mean_ms": round(summary.mean_ms, 3),
            "obs_per_s": round(batch_size / summary.p50_ms * 1e3, 1),
        }
        if device.type == "cuda":
            row["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        else:
            row["peak_rss_mb"] = round(peak_rss_mb(), 1)
        results.append(row)
        logger.info("batch %3d: %s", batch_size, row)
    return {
        "preset": args.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "frame": list(frame_hw),
        "tactile_force_torque": args.tactile,
        "parameters": policy.info.parameters,
        "parameter_bytes": param_bytes,
        "load_s": round(load_s, 2),
        "iters": args.iters,
        "results": results,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--preset", default="tiny", help="tiny | nano-2b (random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batches", default="1,8,32,64", help="comma-separated batch sizes")
    parser.add_argument("--iters", type=int, default=50, help="timed forwards per batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per batch size")
    parser.add_argument("--frame", default="224x224", help="HxW of the camera frames sent")
    parser.add_argument("--tactile", action="store_true", help="send force/torque with every observation")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="write the figures to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
