"""Benchmark: past one server — 1, 2, 4 servers behind 256 closed-loop clients, failover, parallel simulators.

1. **Throughput vs servers.** ``n`` server processes (n = 1, 2, 4), each serving a *fixed-cost*
   policy (:mod:`bench.null_policy` with ``batch_ms``: every batch of up to ``max_batch`` takes
   ``batch_ms``, a sleep — the stand-in for a GPU until the ``simulated`` accelerator model is on
   this branch), so one server's capacity is ``max_batch / batch_ms``. 256 closed-loop clients
   (asyncio coroutines in a few processes, :mod:`bench.async_load`) reach them either with the
   **endpoint list** (``AsyncBridgeClient([...])``: least-in-flight routing) or through the
   **proxy** (:class:`bridge.proxy.ZmqProxy`, libzmq's round-robin device). Efficiency =
   throughput(n) ÷ (n × throughput(1)) in the same mode; each figure is the median of
   ``repeats`` windows, the two modes alternating (list, proxy, proxy, list, …).
2. **Failover.** Two servers, 256 clients with the endpoint list (``timeout_s`` = 1 s); one server
   is SIGKILLed under load. Figures: the time until every client has had a reply again, and the
   replies lost (requests whose caller got an error; in-flight ones are retried elsewhere).
3. **Parallel simulators.** ``run-sim --workers 4`` ÷ ``--workers 1`` episodes/s on Fetch
   PickAndPlace against the scripted expert (the same :func:`sim_adapters.parallel_runs.run_local`
   path for both), on this machine's cores.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomllib

from bench.async_load import START_DELAY_S, run_load
from bench.processes import NULL_POLICY_KIND, REPO_ROOT, ServerProcess, server_table
from bench.stats import ratio, summarize
from bridge.proxy import ZmqProxy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleoutOptions:
    servers: tuple[int, ...] = (1, 2, 4)
    policy: str = "fixed-cost"  # or "simulated": the nano-2b-h200 preset's H200 timing (models/simulated)
    clients: int = 256
    load_processes: int = 2  # client processes the 256 coroutines are spread over
    batch_ms: float = 40.0  # fixed cost of one batch
    max_batch: int = 16  # -> one server's capacity: max_batch / batch_ms = 400 act/s
    frame: int = 32  # square frame side (small: the clients' CPU, not the pixels, is measured)
    warmup_s: float = 1.5
    duration_s: float = 4.0
    modes: tuple[str, ...] = ("list", "proxy")
    repeats: int = 3  # windows per mode and server count, alternating (list, proxy, proxy, list, ...)
    failover_timeout_s: float = 5.0  # above the queueing delay of 256 clients on one server (~1 s)
    failover_kill_after_s: float = 2.0  # after the window opens
    failover_duration_s: float = 8.0
    sim: str = "fetch"
    sim_task: str = "PickAndPlace"
    sim_episodes: int = 8
    sim_workers: tuple[int, ...] = (1, 4)
    torch_threads: int | None = 1


SIMULATED_POLICY = {"kind": "simulated", "preset": "nano-2b-h200"}


def _batch_ms(options: ScaleoutOptions) -> float:
    """The servers' cost of one full batch: the fixed cost, or the simulated H200's forward."""
    if options.policy == "simulated":
        from models.simulated.policy import SimulatedPolicy
        from vtla_contracts.model_spec import ModelSpec

        model = SimulatedPolicy(ModelSpec(SIMULATED_POLICY["kind"], SIMULATED_POLICY["preset"]))
        return float(model.forward_ms(options.max_batch))
    return options.batch_ms


def _table(options: ScaleoutOptions) -> dict[str, Any]:
    policy: dict[str, Any] = dict(SIMULATED_POLICY) if options.policy == "simulated" else {
        "kind": NULL_POLICY_KIND, "options": {"image_size": options.frame, "batch_ms": options.batch_ms}}
    return server_table(
        policy=policy,
        batching={"max_batch": options.max_batch},
        server={"max_inflight": 4 * options.clients, "max_inflight_per_client": options.clients},
    )


def _servers(n: int, options: ScaleoutOptions, work_dir: Path, stack: ExitStack) -> list[ServerProcess]:
    servers = [ServerProcess(f"scaleout-{n}-{k}", _table(options), work_dir, options.torch_threads) for k in range(n)]
    for server in servers:
        stack.callback(server.stop)
        server.launch()  # all import torch at once
    for server in servers:
        server.wait_ready()
    return servers


def _point(endpoints: list[str], options: ScaleoutOptions, timeout_s: float = 30.0,
           record: bool = False, duration_s: float | None = None) -> dict[str, Any]:
    return run_load(endpoints, options.clients, options.load_processes, (options.frame, options.frame),
                    options.warmup_s, duration_s or options.duration_s, timeout_s=timeout_s, record_outcomes=record)


def _window(mode: str, endpoints: list[str], options: ScaleoutOptions) -> dict[str, Any]:
    """One measuring window: the clients reach the servers by the endpoint list or through a proxy."""
    if mode != "proxy":
        return _point(endpoints, options)
    proxy = ZmqProxy("tcp://127.0.0.1:*", endpoints).start()
    time.sleep(0.3)  # the DEALER connects to every backend before the first request
    try:
        return _point([proxy.frontend], options)
    finally:
        proxy.stop()


def measure_throughput(options: ScaleoutOptions, work_dir: Path, progress: bool) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for n in options.servers:
        with ExitStack() as stack:
            servers = _servers(n, options, work_dir, stack)
            endpoints = [s.endpoint for s in servers]
            windows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in options.modes}
            for r in range(options.repeats):
                for mode in options.modes if r % 2 == 0 else tuple(reversed(options.modes)):
                    windows[mode].append(_window(mode, endpoints, options))
            for mode, loads in windows.items():
                rates = sorted(load["throughput_rps"] for load in loads)
                point = {"servers": n, "mode": mode, "throughput_rps": rates[len(rates) // 2],
                         "window_throughputs_rps": rates,
                         "capacity_rps": n * options.max_batch / (_batch_ms(options) / 1000.0),
                         "latency": summarize([v for load in loads for v in load["latencies_ms"]]).as_dict(),
                         "errors": {code: sum(load["errors"].get(code, 0) for load in loads)
                                    for code in {c for load in loads for c in load["errors"]}}}
                points.append(point)
                if progress:
                    logger.warning("scaleout: %d server(s), %s: %.0f act/s (windows %s)", n, mode,
                                   point["throughput_rps"], [round(x) for x in rates])
    for point in points:
        base = next(p["throughput_rps"] for p in points if p["servers"] == 1 and p["mode"] == point["mode"])
        point["efficiency_vs_linear"] = ratio(point["throughput_rps"], point["servers"] * base)
        point["efficiency_vs_capacity"] = ratio(point["throughput_rps"], point["capacity_rps"])
    return points


def recovery(outcomes: list[tuple[float, int, bool]], clients: int, kill_at: float) -> dict[str, Any]:
    """From every request's (end time, client, ok): how long until each client had a reply again."""
    first_ok_after: dict[int, float] = {}
    for end, client, ok in sorted(outcomes):
        if ok and end >= kill_at and client not in first_ok_after:
            first_ok_after[client] = end - kill_at
    waits = sorted(first_ok_after.values())
    return {
        "clients_recovered": len(waits),
        "clients": clients,
        "all_recovered_s": waits[-1] if len(waits) == clients else float("nan"),
        "median_client_recovery_s": waits[len(waits) // 2] if waits else float("nan"),
        "replies_lost": sum(1 for _, _, ok in outcomes if not ok),
        "requests": len(outcomes),
    }


def measure_failover(options: ScaleoutOptions, work_dir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        servers = _servers(2, options, work_dir, stack)
        victim = servers[0]
        killed: dict[str, float] = {}

        def kill() -> None:
            assert victim.pid is not None
            killed["at"] = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)

        delay_s = START_DELAY_S + options.warmup_s + options.failover_kill_after_s  # run_load's start delay + warm-up
        timer = threading.Timer(delay_s, kill)
        timer.start()
        try:
            load = _point([s.endpoint for s in servers], options, timeout_s=options.failover_timeout_s, record=True,
                          duration_s=options.failover_duration_s)
        finally:
            timer.cancel()
        result = recovery(load["outcomes"], options.clients, killed.get("at", float("nan")))
        result.update(errors=load["errors"], timeout_s=options.failover_timeout_s,
                      throughput_rps=load["throughput_rps"])
        return result


def measure_sim_workers(options: ScaleoutOptions, work_dir: Path) -> dict[str, Any]:
    from bridge.client import BridgeClient
    from sim_adapters.interface import AdapterSettings
    from sim_adapters.parallel_runs import WorkerJob, run_local, split_episodes
    from sim_adapters.runner import PolicyInputs, RunSettings

    table = tomllib.loads((REPO_ROOT / "configs" / "fetch-expert.toml").read_text())
    with ServerProcess("scaleout-fetch-expert", table, work_dir, options.torch_threads) as server:
        with BridgeClient(server.endpoint) as client:
            inputs = PolicyInputs.from_hello(client.hello())
        settings = RunSettings(episodes=options.sim_episodes, rate_hz=0.0, inputs=inputs)
        adapter = AdapterSettings(task=options.sim_task, image_size=(64, 64))
        runs: dict[str, Any] = {}
        for workers in options.sim_workers:
            jobs = [WorkerJob(w, options.sim, adapter, settings, eps, (server.endpoint,))
                    for w, eps in enumerate(split_episodes(options.sim_episodes, workers))]
            summary = run_local(jobs, options.sim_episodes, {"sim": options.sim}, progress=False)
            if summary["worker_errors"]:
                raise RuntimeError(f"run-sim workers failed: {summary['worker_errors']}")
            runs[str(workers)] = {k: summary[k] for k in ("episodes", "successes", "episodes_per_s", "wall_s")}
    low, high = (str(w) for w in (min(options.sim_workers), max(options.sim_workers)))
    return {"runs": runs, "ratio": ratio(runs[high]["episodes_per_s"], runs[low]["episodes_per_s"]),
            "compared": [int(high), int(low)], "cpu_count": os.cpu_count()}


def run_scaleout(options: ScaleoutOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"options": asdict(options), "batch_ms": _batch_ms(options)}
    result["points"] = measure_throughput(options, work_dir, progress)
    result["failover"] = measure_failover(options, work_dir)
    try:
        import gymnasium_robotics  # noqa: F401
    except ImportError:
        result["sim_workers"] = {"status": "pending", "reason": "gymnasium-robotics is not installed"}
    else:
        result["sim_workers"] = measure_sim_workers(options, work_dir)
    return result
