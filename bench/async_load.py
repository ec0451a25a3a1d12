"""Many closed-loop ``act`` clients per OS process: asyncio coroutines over one AsyncBridgeClient.

256 clients as 256 interpreters would not fit a small machine; a few processes of many
coroutines each do (every coroutine waits for its reply before sending the next request, as a
simulator does). Each process reports completions inside the shared measuring window and, for
the failover benchmark, every request's end time and outcome.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.frames import scene_frame
from bridge.aio_client import AsyncBridgeClient
from bridge.endpoints import PoolPolicy
from bridge.errors import BridgeError

START_DELAY_S = 3.0  # from the spawn of the load processes to their first request (their start-up fits in)


@dataclass(frozen=True)
class AsyncLoad:
    endpoints: tuple[str, ...]  # one (a proxy, a server) or several (the client's endpoint pool)
    clients: int  # closed-loop coroutines in this process
    frame_hw: tuple[int, int]
    start_at: float  # time.monotonic() of the first request
    warmup_s: float
    duration_s: float
    timeout_s: float = 30.0
    record_outcomes: bool = False  # every request's (end time, client, ok): for failover
    first_client: int = 0  # global index of this process's first coroutine


async def _drive(load: AsyncLoad) -> dict[str, Any]:
    frame = scene_frame(*load.frame_hw, seed=load.first_client)
    client = AsyncBridgeClient(list(load.endpoints), timeout_s=load.timeout_s,
                               pool_policy=PoolPolicy(probe_interval_s=0.2, probe_timeout_s=0.5))
    window_start = load.start_at + load.warmup_s
    window_end = window_start + load.duration_s
    completed = 0
    latencies_ms: list[float] = []
    errors: dict[str, int] = {}
    outcomes: list[tuple[float, int, bool]] = []

    async def one(index: int) -> None:
        nonlocal completed
        while True:
            now = time.monotonic()
            if now >= window_end:
                return
            try:
                reply = await client.act(image=frame)
                ok = True
            except BridgeError as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1
                ok = False
            done = time.monotonic()
            if load.record_outcomes:
                outcomes.append((done, index, ok))
            if ok and window_start <= done <= window_end:
                completed += 1
                latencies_ms.append(reply.round_trip_ms)

    await asyncio.sleep(max(0.0, load.start_at - time.monotonic()))
    try:
        await asyncio.gather(*(one(load.first_client + i) for i in range(load.clients)))
    finally:
        await client.close()
    return {"completed": completed, "latencies_ms": latencies_ms, "errors": errors, "outcomes": outcomes}


def _process_main(load: AsyncLoad, results: Any) -> None:  # pragma: no cover - runs in the child
    try:
        results.put(("done", asyncio.run(_drive(load))))
    except Exception as exc:
        results.put(("failed", f"{type(exc).__name__}: {exc}"))


def run_load(endpoints: Sequence[str], clients: int, processes: int, frame_hw: tuple[int, int], warmup_s: float,
             duration_s: float, *, timeout_s: float = 30.0, record_outcomes: bool = False,
             start_delay_s: float = START_DELAY_S) -> dict[str, Any]:
    """``clients`` closed-loop clients in ``processes`` processes -> pooled counts, latencies, errors."""
    context = mp.get_context("spawn")
    results: Any = context.Queue()
    start_at = time.monotonic() + start_delay_s  # the spawned interpreters' start-up fits in here
    per, extra = divmod(clients, processes)
    loads, first = [], 0
    for p in range(processes):
        n = per + (p < extra)
        loads.append(AsyncLoad(tuple(endpoints), n, frame_hw, start_at, warmup_s, duration_s, timeout_s,
                               record_outcomes, first))
        first += n
    procs = [context.Process(target=_process_main, args=(load, results), daemon=True) for load in loads if load.clients]
    for proc in procs:
        proc.start()
    pooled: dict[str, Any] = {"completed": 0, "latencies_ms": [], "errors": {}, "outcomes": []}
    try:
        for _ in procs:
            kind, payload = results.get(timeout=start_delay_s + warmup_s + duration_s + 2 * timeout_s + 60)
            if kind == "failed":
                raise RuntimeError(f"load process failed: {payload}")
            pooled["completed"] += payload["completed"]
            pooled["latencies_ms"].extend(payload["latencies_ms"])
            pooled["outcomes"].extend(payload["outcomes"])
            for code, count in payload["errors"].items():
                pooled["errors"][code] = pooled["errors"].get(code, 0) + count
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
    pooled["throughput_rps"] = pooled["completed"] / duration_s
    pooled["start_at"] = start_at
    return pooled
