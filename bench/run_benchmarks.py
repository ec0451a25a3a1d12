"""``vtla-bridge bench {transport,batching,control,engine,gpu,all}``: run, print the table, write JSON and plots.

    vtla-bridge bench all                 # everything, < ~10 min on a 2-core CPU box
    vtla-bridge bench transport --iters 300
    vtla-bridge bench batching --quick    # CI-sized
    python -m bench all --out /tmp/bench  # the same without the vtla-bridge entry point

Results: ``<out>/<benchmark>.json`` (every figure and the raw samples), ``<out>/*.png``,
``<out>/table.md`` and ``<out>/summary.json``; server logs under ``<out>/logs/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.batching import BatchingOptions, run_batching
from bench.control import ControlOptions, run_control
from bench.engine import EngineOptions, run_engine
from bench.gpu import GpuOptions, GpuUnavailable, run_gpu
from bench.report import Figure, figures_for, markdown_table, text_table, write_json
from bench.scaleout import ScaleoutOptions, run_scaleout
from bench.transport import TransportOptions, run_transport

logger = logging.getLogger(__name__)

BENCHMARKS = ("transport", "batching", "control", "engine", "gpu", "scaleout")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

Runner = Callable[[argparse.Namespace, Path, bool], dict[str, Any]]


def transport_options(args: argparse.Namespace) -> TransportOptions:
    options = TransportOptions(torch_threads=args.torch_threads)
    if args.quick:
        options = replace(options, rounds=20, warmup_rounds=3)
    if args.iters:
        options = replace(options, rounds=args.iters)
    if args.transport_variants:
        options = replace(options, variants=tuple(v.strip() for v in args.transport_variants.split(",")))
    if args.transport_sizes:
        options = replace(options, sizes=tuple(v.strip() for v in args.transport_sizes.split(",")))
    return options


def batching_options(args: argparse.Namespace) -> BatchingOptions:
    options = BatchingOptions(torch_threads=args.torch_threads)
    if args.quick:
        options = replace(options, clients=(1, 4), duration_s=0.6, warmup_s=0.2, repeats=1)
    if args.duration_s:
        options = replace(options, duration_s=args.duration_s)
    if args.clients:
        options = replace(options, clients=tuple(int(c) for c in args.clients.split(",")))
    return options


def control_options(args: argparse.Namespace) -> ControlOptions:
    options = ControlOptions(torch_threads=args.torch_threads)
    if args.quick:
        options = replace(options, streams=2, window_s=1.0, repeats=1, ramp_s=0.3, max_tokens=16)
    if args.duration_s:
        options = replace(options, window_s=args.duration_s)
    return options


def gpu_options(args: argparse.Namespace) -> GpuOptions:
    options = GpuOptions()
    if args.quick:
        options = replace(options, act_iters=30, throughput_s=3.0, caption_window_s=3.0)
    if args.iters:
        options = replace(options, act_iters=args.iters)
    return options


def engine_options(args: argparse.Namespace) -> EngineOptions:
    options = EngineOptions()
    if args.quick:
        options = options.quick()
    if args.duration_s:
        options = replace(options, duration_s=args.duration_s)
    if args.clients:
        options = replace(options, clients=tuple(int(c) for c in args.clients.split(",")))
    return options


def scaleout_options(args: argparse.Namespace) -> ScaleoutOptions:
    options = ScaleoutOptions(torch_threads=args.torch_threads, policy=args.scaleout_policy)
    if args.quick:
        options = replace(options, servers=(1, 2), clients=32, warmup_s=0.5, duration_s=1.0, repeats=1,
                          failover_duration_s=4.0, failover_kill_after_s=1.0, sim_episodes=2, sim_workers=(1, 2))
    if args.duration_s:
        options = replace(options, duration_s=args.duration_s)
    return options


RUNNERS: dict[str, Runner] = {
    "transport": lambda a, w, p: run_transport(transport_options(a), w, p),
    "batching": lambda a, w, p: run_batching(batching_options(a), w, p),
    "control": lambda a, w, p: run_control(control_options(a), w, p),
    "engine": lambda a, w, p: run_engine(engine_options(a), w, p),
    "gpu": lambda a, w, p: run_gpu(gpu_options(a), w, p),
    "scaleout": lambda a, w, p: run_scaleout(scaleout_options(a), w, p),
}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_one(name: str, args: argparse.Namespace, out_dir: Path, progress: bool) -> dict[str, Any]:
    """Run one benchmark; a failure (or no CUDA for ``gpu``) becomes a status in the result."""
    started = time.monotonic()
    try:
        result = RUNNERS[name](args, out_dir / "logs", progress)
        result["status"] = "ok"
    except GpuUnavailable as exc:
        result = {"status": "pending", "reason": str(exc)}
    except Exception as exc:
        logger.exception("benchmark %s failed", name)
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    result["elapsed_s"] = time.monotonic() - started
    result["machine"] = machine()
    result["command"] = " ".join(["vtla-bridge", "bench", *args.argv])
    write_json(out_dir / f"{name}.json", result)
    try:
        from bench.plots import plot
    except ModuleNotFoundError as exc:  # matplotlib comes with the bench extra
        logger.warning("no plots (%s): pip install '.[bench]' for them; the JSON and the table are written", exc)
        return result
    for path in plot(name, result, out_dir):
        logger.info("wrote %s", path)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtla-bridge bench", description="measure vtla-bridge, side by side"
    )
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results folder (default: bench/results/)"
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized runs: seconds, not minutes")
    parser.add_argument("--iters", type=int, default=0, help="transport rounds / GPU act iterations")
    parser.add_argument("--duration-s", type=float, default=0.0, help="batching/control measuring window")
    parser.add_argument("--clients", default="", help="batching client counts, e.g. 1,4,16,32,64")
    parser.add_argument("--transport-variants", default="",
                        help="transport variants to run, e.g. zmq_echo,bridge_null,bridge_flat,openpi_flat "
                        "(default: all; openpi_flat needs openpi-client)")
    parser.add_argument("--transport-sizes", default="", help="transport frame sizes, e.g. 224x224 (default: both)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of CPU servers (default 1: no oversubscription on a small shared box; "
        "0: torch's default)",
    )
    parser.add_argument("--scaleout-policy", choices=("fixed-cost", "simulated"), default="fixed-cost",
                        help="what the scaleout servers serve: the fixed-cost null policy (40 ms per batch of 16) "
                        "or the simulated nano-2b-h200 (H200 timing; frames at its 384 px input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "WARNING"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.torch_threads is not None and args.torch_threads <= 0:
        args.torch_threads = None
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    progress = not args.no_progress
    figures: list[Figure] = []
    statuses: dict[str, str] = {}
    started = time.monotonic()
    for name in names:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        result = run_one(name, args, out_dir, progress)
        statuses[name] = result["status"]
        if result["status"] == "pending":
            print(f"vtla-bridge bench {name}: {result['reason']}", file=sys.stderr)
        elif result["status"] == "failed":
            print(f"vtla-bridge bench {name}: FAILED: {result['error']}", file=sys.stderr)
        figures.extend(figures_for(name, result))
    elapsed_s = time.monotonic() - started
    print(text_table(figures))
    print(f"\n{len(names)} benchmark(s) in {elapsed_s:.0f} s; results in {out_dir}")
    (out_dir / "table.md").write_text(markdown_table(figures) + "\n")
    write_json(
        out_dir / "summary.json",
        {
            "statuses": statuses,
            "elapsed_s": elapsed_s,
            "machine": machine(),
            "figures": [f.__dict__ | {"verdict": f.verdict} for f in figures],
        },
    )
    if any(s == "failed" for s in statuses.values()):
        return 1
    if args.benchmark == "gpu" and statuses["gpu"] == "pending":
        return 2  # asked for the GPU benchmark explicitly: refuse clearly
    return 0


if __name__ == "__main__":
    sys.exit(main())
