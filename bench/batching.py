"""Benchmark 2: batching scaling — 1..64 concurrent clients (separate processes), batching on vs off.

Two servers with the tiny VTLA on CPU run side by side: ``[batching] max_batch = 64`` (on) and
``max_batch = 1`` (off). For every client count the two are measured in short windows, alternating
on, off, off, on, on, off ... (``repeats`` windows each); throughput is the median window. Clients
send frames at the model's own input size (from ``hello``), so the server's resize does not
hide the batching effect.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.client_pool import ClientPool, LoadCommand, aggregate
from bench.processes import ServerProcess, server_table
from bench.stats import ratio

logger = logging.getLogger(__name__)

MODES = ("on", "off")


@dataclass(frozen=True)
class BatchingOptions:
    clients: tuple[int, ...] = (1, 4, 16, 32, 64)
    duration_s: float = 1.5  # one measuring window
    warmup_s: float = 0.3  # before each window
    repeats: int = 3  # windows per mode and client count, alternating on/off
    max_batch_on: int = 64
    policy: tuple[tuple[str, Any], ...] = (("kind", "vtla"), ("preset", "tiny"))
    frame_hw: tuple[int, int] | None = None  # None: the model's image_size
    timeout_s: float = 60.0
    torch_threads: int | None = 1  # OMP_NUM_THREADS of the servers; None: torch's default


def _frame_hw(hello: dict[str, Any], fallback: int = 224) -> tuple[int, int]:
    for entry in hello.get("models", {}).values():
        size = entry.get("image_size") if isinstance(entry, dict) else None
        if isinstance(size, list) and len(size) == 2:
            return int(size[0]), int(size[1])
    return fallback, fallback


def scaling_ratio(points: list[dict[str, Any]], high: int, low: int = 1) -> float:
    """Throughput at ``high`` clients over throughput at ``low`` clients (NaN when either is missing)."""
    by_clients = {p["clients"]: p["throughput_rps"] for p in points}
    return ratio(by_clients.get(high, float("nan")), by_clients.get(low, float("nan")))


def run_batching(options: BatchingOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    counts = sorted(set(options.clients))
    if not counts or counts[0] < 1:
        raise ValueError(f"client counts must be >= 1, got {options.clients}")
    policy = dict(options.policy)
    with ExitStack() as stack:
        servers = {
            "on": ServerProcess(
                "batching-on-server",
                server_table(policy, batching={"max_batch": options.max_batch_on}),
                work_dir,
                options.torch_threads,
            ).launch(),
            "off": ServerProcess(
                "batching-off-server",
                server_table(policy, batching={"max_batch": 1}),
                work_dir,
                options.torch_threads,
            ).launch(),
        }
        for server in servers.values():
            stack.callback(server.stop)
        pool = stack.enter_context(ClientPool(counts[-1]))
        for server in servers.values():
            server.wait_ready()
        frame_hw = options.frame_hw or _frame_hw(dict(servers["on"].hello))
        points: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        steps = len(counts) * options.repeats * len(MODES)
        bar = tqdm(total=steps, desc="batching", file=sys.stderr, disable=not progress, leave=False)
        for n in counts:
            windows: dict[str, list[Any]] = {mode: [] for mode in MODES}
            for r in range(options.repeats):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    command = LoadCommand(
                        endpoint=servers[mode].endpoint,
                        frame_hw=frame_hw,
                        start_at=time.monotonic() + 0.2,
                        warmup_s=options.warmup_s,
                        duration_s=options.duration_s,
                        timeout_s=options.timeout_s,
                    )
                    windows[mode].append(pool.run(n, command))
                    bar.update()
            for mode in MODES:
                point = aggregate(windows[mode], options.duration_s)
                logger.info(
                    "batching %s, %d clients: %.1f req/s, p50 %.1f ms, mean batch %.1f",
                    mode, n, point["throughput_rps"], point["latency"]["p50_ms"], point["mean_batch_size"],
                )  # fmt: skip
                points[mode].append(point)
        bar.close()
    top = 32 if 32 in counts else counts[-1]
    return {
        "options": {**options.__dict__, "policy": policy, "frame_hw": list(frame_hw)},
        "modes": {mode: sorted(points[mode], key=lambda p: p["clients"]) for mode in MODES},
        "ratios": {
            "clients_compared": [top, counts[0]],
            "on_scaling": scaling_ratio(points["on"], top, counts[0]),
            "off_scaling": scaling_ratio(points["off"], top, counts[0]),
            "on_vs_off_at_top": ratio(_throughput(points["on"], top), _throughput(points["off"], top)),
        },
    }


def _throughput(points: list[dict[str, Any]], clients: int) -> float:
    for p in points:
        if p["clients"] == clients:
            return float(p["throughput_rps"])
    return float("nan")
