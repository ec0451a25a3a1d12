"""A pool of simulated clients, one OS process each, driving ``act`` in a closed loop.

Processes are spawned once and reused for every point of a sweep (spawning 64 interpreters on a
small machine takes longer than measuring). Each point is a command to the first N workers:
start together at ``start_at`` (``time.monotonic``, shared by all processes on one host), warm
up, then count the requests that complete inside the measuring window.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.frames import scene_frame
from bench.lifecycle import StartStop
from bench.stats import summarize
from bridge.client import BridgeClient
from bridge.errors import BridgeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadCommand:
    endpoint: str
    frame_hw: tuple[int, int]
    start_at: float  # time.monotonic() of the first request
    warmup_s: float
    duration_s: float
    timeout_s: float = 30.0


@dataclass
class WorkerResult:
    worker: int
    completed: int = 0  # requests answered inside the window
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


def _run_load(
    worker: int,
    command: LoadCommand,
    clients: dict[str, BridgeClient],
    frames: dict[tuple[int, int], np.ndarray],
) -> WorkerResult:
    client = clients.get(command.endpoint)
    if client is None:
        client = clients[command.endpoint] = BridgeClient(command.endpoint, timeout_s=command.timeout_s)
    frame = frames.get(command.frame_hw)
    if frame is None:
        frame = frames[command.frame_hw] = scene_frame(*command.frame_hw, seed=worker)
    result = WorkerResult(worker)
    window_start = command.start_at + command.warmup_s
    window_end = window_start + command.duration_s
    time.sleep(max(0.0, command.start_at - time.monotonic()))
    while True:
        now = time.monotonic()
        if now >= window_end:
            return result
        try:
            reply = client.act(image=frame)
        except BridgeError as exc:
            result.errors[exc.code] = result.errors.get(exc.code, 0) + 1
            continue
        done = time.monotonic()
        if window_start <= done <= window_end:
            result.completed += 1
            result.latencies_ms.append(reply.round_trip_ms)
            result.batch_sizes.append(int(reply.timing.get("batch_size", 1)))


def _worker_main(worker: int, commands: Any, results: Any) -> None:
    clients: dict[str, BridgeClient] = {}
    frames: dict[tuple[int, int], np.ndarray] = {}
    results.put(("ready", worker))
    try:
        while True:
            command = commands.get()
            if command is None:
                return
            try:
                results.put(("done", _run_load(worker, command, clients, frames)))
            except Exception as exc:  # reported to the parent, which raises
                results.put(("failed", f"worker {worker}: {type(exc).__name__}: {exc}"))
    finally:
        for client in clients.values():
            client.close()


class ClientPool(StartStop):
    """``with ClientPool(64) as pool: results = pool.run(n_clients, command)``."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("ClientPool needs at least one worker")
        ctx = mp.get_context("spawn")
        self.size = size
        self._results: Any = ctx.Queue()
        self._commands = [ctx.Queue() for _ in range(size)]
        self._processes = [
            ctx.Process(target=_worker_main, args=(i, self._commands[i], self._results), daemon=True)
            for i in range(size)
        ]

    def start(self, timeout_s: float = 120.0) -> ClientPool:
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + timeout_s
        ready = 0
        while ready < self.size:
            try:
                kind, _ = self._results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(
                    f"only {ready} of {self.size} client processes started in {timeout_s:.0f} s"
                ) from None
            ready += kind == "ready"
        return self

    def run(self, n_clients: int, command: LoadCommand) -> list[WorkerResult]:
        """Drive ``n_clients`` workers with ``command``; blocks until all report."""
        if not 1 <= n_clients <= self.size:
            raise ValueError(f"n_clients must be in 1..{self.size}, got {n_clients}")
        for i in range(n_clients):
            self._commands[i].put(command)
        wait_s = (
            command.start_at
            - time.monotonic()
            + command.warmup_s
            + command.duration_s
            + command.timeout_s
            + 30
        )
        results: list[WorkerResult] = []
        while len(results) < n_clients:
            kind, payload = self._results.get(timeout=max(1.0, wait_s))
            if kind == "failed":
                raise RuntimeError(f"client process failed: {payload}")
            results.append(payload)
        return sorted(results, key=lambda r: r.worker)

    def stop(self) -> None:
        for commands, process in zip(self._commands, self._processes, strict=True):
            if process.is_alive():
                commands.put(None)
        for process in self._processes:
            process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join(2.0)


def aggregate(windows: list[list[WorkerResult]], duration_s: float) -> dict[str, Any]:
    """Several measuring windows of one point (same client count) -> one summary.

    Throughput is the median over the windows (robust to a window hit by a neighbour's burst);
    latencies and batch sizes are pooled over all windows.
    """
    if not windows:
        raise ValueError("aggregate needs at least one window")
    per_window = [sum(r.completed for r in results) / duration_s for results in windows]
    latencies = [v for results in windows for r in results for v in r.latencies_ms]
    batches = [b for results in windows for r in results for b in r.batch_sizes]
    errors: dict[str, int] = {}
    for results in windows:
        for r in results:
            for code, count in r.errors.items():
                errors[code] = errors.get(code, 0) + count
    return {
        "clients": len(windows[0]),
        "completed": sum(r.completed for results in windows for r in results),
        "throughput_rps": float(np.median(per_window)),
        "window_throughputs_rps": per_window,
        "latency": summarize(latencies).as_dict(),
        "mean_batch_size": float(np.mean(batches)) if batches else float("nan"),
        "errors": errors,
        "latencies_ms": latencies,
    }
