"""``run-sim ... --workers N`` (and ``--ray ADDRESS``): N simulator processes, one merged summary.

Episode ``i`` of the sweep (seed ``seed + i``, session ``sim-i``, exactly as in a one-process run)
goes to worker ``i % N``; every worker owns its simulator and its client (the endpoint list,
so the server side may be several servers). Workers report progress events — started, steps,
each finished episode — and the parent draws one progress bar over all of them (steps, success
so far, episodes done per worker) and merges the episodes into the ordinary summary: success
rate and episode lengths over all episodes, latency percentiles over all queries (not averaged
per worker), plus ``workers``, ``per_worker`` and ``episodes_per_s`` (episodes ÷ the time from
the first episode's start to the last one's end, so interpreter and simulator start-up are not
counted; ``wall_s`` includes them).

Locally the workers are ``multiprocessing`` processes (spawned: no simulator or GL state is
forked). With ``--ray ADDRESS`` they are Ray tasks (``ray`` is an optional extra), one CPU each,
placed anywhere on the cluster; their events come back through a ``ray.util.queue.Queue``.
Worker results cross process boundaries as plain dicts (our own processes, never socket data).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sim_adapters.interface import AdapterSettings
from sim_adapters.metrics import EpisodeResult, StepTiming, summarize

logger = logging.getLogger(__name__)

_STEP_REPORT_EVERY = 10  # steps between progress events of a worker
_EVENT_POLL_S = 0.2
_GO_TIMEOUT_S = 600.0  # a worker waits this long at most for the others' simulators


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs (picklable)."""

    worker: int
    sim: str
    adapter: AdapterSettings
    settings: Any  # sim_adapters.runner.RunSettings (its episode indices below)
    episodes: tuple[int, ...]
    servers: tuple[str, ...]
    timeout_s: float = 30.0
    auth: str | None = None


def split_episodes(episodes: int, workers: int) -> list[tuple[int, ...]]:
    """Episode ``i`` -> worker ``i % workers``; workers beyond the episode count get none."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    return [tuple(range(w, episodes, workers)) for w in range(min(workers, episodes))]


def _episode_dict(ep: EpisodeResult) -> dict[str, Any]:
    return {**{k: v for k, v in asdict(ep).items() if k != "timings"},
            "timings": [(t.round_trip_ms, t.server_ms) for t in ep.timings]}


def _episode_from_dict(data: Mapping[str, Any]) -> EpisodeResult:
    fields = {k: v for k, v in data.items() if k != "timings"}
    return EpisodeResult(**fields, timings=[StepTiming(float(rt), float(srv)) for rt, srv in data["timings"]])


def run_worker(job: WorkerJob, emit: Callable[[tuple[Any, ...]], None],
               wait_go: Callable[[], object] | None = None) -> None:
    """One worker's episodes; every outcome is an event: started / steps / episode / done / error.

    ``wait_go`` (local runs) holds the first episode until every worker has its simulator, so
    that the workers really run side by side and ``episodes_per_s`` measures that.
    """
    from bridge.client import BridgeClient
    from sim_adapters.runner import run_episode
    from sim_adapters.simulators import make_adapter

    try:
        adapter = make_adapter(job.sim, job.adapter)
    except Exception as exc:  # reported, not raised: the parent decides
        emit(("error", job.worker, f"{type(exc).__name__}: {exc}"))
        emit(("done", job.worker))
        return
    emit(("started", job.worker, adapter.max_steps))
    if wait_go is not None:
        wait_go()
    steps = 0

    def on_step() -> None:
        nonlocal steps
        steps += 1
        if steps >= _STEP_REPORT_EVERY:
            emit(("steps", job.worker, steps))
            steps = 0

    try:
        with BridgeClient(list(job.servers), timeout_s=job.timeout_s, auth=job.auth) as client:
            for index in job.episodes:
                began = time.time()
                ep = run_episode(adapter, client, job.settings, index, None, on_step)
                emit(("steps", job.worker, steps + adapter.max_steps - ep.steps))  # a finished episode fills its share
                steps = 0
                emit(("episode", job.worker, _episode_dict(ep), began, time.time()))
    except Exception as exc:
        emit(("error", job.worker, f"{type(exc).__name__}: {exc}"))
    finally:
        adapter.close()
    emit(("done", job.worker))


def _process_main(job: WorkerJob, events: Any, go: Any) -> None:  # pragma: no cover - runs in the child
    logging.basicConfig(level=logging.WARNING)
    run_worker(job, events.put, lambda: go.wait(_GO_TIMEOUT_S))


@dataclass
class _Progress:
    """The one display over all workers (a tqdm bar on stderr, or nothing)."""

    workers: int
    episodes: int
    enabled: bool
    done: list[int] = field(default_factory=list)
    successes: int = 0
    bar: Any = None

    def __post_init__(self) -> None:
        self.done = [0] * self.workers
        if self.enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm ships with the bridge client
                self.bar = None

    def started(self, max_steps: int) -> None:
        if self.bar is not None and not self.bar.total:
            self.bar.total = self.episodes * max_steps
            self.bar.refresh()

    def steps(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def episode(self, worker: int, success: bool) -> None:
        self.done[worker] += 1
        self.successes += int(success)
        if self.bar is not None:
            self.bar.set_postfix(success=f"{self.successes}/{sum(self.done)}",
                                 workers="|".join(str(d) for d in self.done))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def merge(events: Iterator[tuple[Any, ...]], workers: int, episodes: int, meta: Mapping[str, Any],
          progress: bool = False, on_all_started: Callable[[], object] | None = None) -> dict[str, Any]:
    """Consume the workers' events until every worker is done -> the merged summary.

    ``on_all_started`` is called once every worker has started (or failed before starting).
    """
    display = _Progress(workers, episodes, progress)
    results: list[EpisodeResult] = []
    per_worker: list[dict[str, Any]] = [
        {"worker": w, "episodes": 0, "successes": 0, "steps": 0, "error": None} for w in range(workers)
    ]
    first_start, last_end = float("inf"), 0.0
    finished = 0
    ready: set[int] = set()
    try:
        for event in events:
            kind, worker = event[0], int(event[1])
            if kind in ("started", "error", "done") and worker not in ready:
                ready.add(worker)
                if len(ready) == workers and on_all_started is not None:
                    on_all_started()
            if kind == "started":
                display.started(int(event[2]))
            elif kind == "steps":
                display.steps(int(event[2]))
            elif kind == "episode":
                ep = _episode_from_dict(event[2])
                results.append(ep)
                first_start, last_end = min(first_start, float(event[3])), max(last_end, float(event[4]))
                row = per_worker[worker]
                row["episodes"] += 1
                row["successes"] += int(ep.success)
                row["steps"] += ep.steps
                display.episode(worker, ep.success)
            elif kind == "error":
                per_worker[worker]["error"] = str(event[2])
                logger.error("worker %d: %s", worker, event[2])
            elif kind == "done":
                finished += 1
                if finished == workers:
                    break
    finally:
        display.close()
    results.sort(key=lambda ep: ep.index)
    span_s = last_end - first_start if results else 0.0
    summary = summarize(results, dict(meta))
    summary.update(workers=workers, per_worker=per_worker, episodes_per_s=len(results) / span_s if span_s > 0 else 0.0,
                   worker_errors=[row["error"] for row in per_worker if row["error"]])
    return summary


def _drain(get: Callable[[float], tuple[Any, ...]], alive: Callable[[], bool]) -> Iterator[tuple[Any, ...]]:
    """Events from a queue; stops (with 'done' for the rest) if every worker is gone without saying so."""
    while True:
        try:
            yield get(_EVENT_POLL_S)
        except queue.Empty:
            if not alive():
                return


def run_local(jobs: Sequence[WorkerJob], episodes: int, meta: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    """Workers as spawned processes on this machine."""
    context = mp.get_context("spawn")
    events = context.Queue()
    go = context.Event()
    procs = [context.Process(target=_process_main, args=(job, events, go), name=f"run-sim-worker-{job.worker}",
                             daemon=True) for job in jobs]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    try:
        summary = merge(_drain(lambda t: events.get(timeout=t), lambda: any(p.is_alive() for p in procs)),
                        len(jobs), episodes, meta, progress, on_all_started=go.set)
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
    crashed = [p.name for p in procs if p.exitcode not in (0, None)]
    if crashed:
        summary["worker_errors"].extend(f"{name} exited abnormally" for name in crashed)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def run_on_ray(jobs: Sequence[WorkerJob], episodes: int, meta: Mapping[str, Any], progress: bool,
               address: str) -> dict[str, Any]:
    """Workers as Ray tasks (one CPU each) on the cluster at ``address`` ("local": a local instance)."""
    try:
        import ray
        from ray.util.queue import Empty as RayEmpty
        from ray.util.queue import Queue as RayQueue
    except ImportError as exc:
        raise RuntimeError("--ray needs Ray: pip install 'vtla-bridge[ray]'") from exc
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)
    started = time.perf_counter()
    try:
        events = RayQueue(actor_options={"num_cpus": 0})
        task = ray.remote(num_cpus=1)(_ray_task)
        refs = [task.remote(job, events) for job in jobs]

        def get(timeout_s: float) -> tuple[Any, ...]:
            try:
                item: tuple[Any, ...] = events.get(timeout=timeout_s)
                return item
            except RayEmpty:
                raise queue.Empty from None

        def alive() -> bool:
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
            return bool(pending) or not events.empty()

        summary = merge(_drain(get, alive), len(jobs), episodes, meta, progress)
        ray.get(refs)
        events.shutdown()
    finally:
        if owns_ray:
            ray.shutdown()
    summary["wall_s"] = time.perf_counter() - started
    summary["ray_address"] = address
    return summary


def _ray_task(job: WorkerJob, events: Any) -> None:  # pragma: no cover - runs in a Ray worker
    run_worker(job, events.put)


def main_parallel(args: Any, settings: Any, adapter_settings: AdapterSettings) -> int:
    """``run-sim`` with ``--workers N`` > 1 or ``--ray``: hello once, run the workers, print/write the summary.

    With ``--ray``, ``--server ray`` connects to the server actors of :mod:`bridge.ray_servers`
    (found by :mod:`bridge.ray_discovery`).
    """
    if args.video:
        print("run-sim: --video records in one process; use --workers 1", file=sys.stderr)
        return 2
    ray_module: Any = None
    if args.ray:
        try:
            import ray as ray_module
        except ImportError:
            print("run-sim: --ray needs Ray: pip install 'vtla-bridge[ray]'", file=sys.stderr)
            return 2
    owns_ray = ray_module is not None and not ray_module.is_initialized()
    if owns_ray:
        ray_module.init(address=None if args.ray == "local" else args.ray, include_dashboard=False,
                        log_to_driver=False)
    try:
        return _main_parallel(args, settings, adapter_settings)
    finally:
        if owns_ray:
            ray_module.shutdown()


def _main_parallel(args: Any, settings: Any, adapter_settings: AdapterSettings) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from bridge.client import BridgeClient
    from bridge.endpoints import endpoint_list
    from bridge.errors import BridgeError
    from sim_adapters.metrics import format_summary
    from sim_adapters.runner import PolicyInputs

    try:
        if args.ray and args.server == "ray":  # the server actors of bridge.ray_servers
            from bridge.ray_discovery import discover_endpoints

            servers = tuple(discover_endpoints())
        else:
            servers = endpoint_list(args.server)
        jobs_episodes = split_episodes(settings.episodes, args.workers)
    except (ValueError, RuntimeError) as exc:
        print(f"run-sim: {exc}", file=sys.stderr)
        return 2
    try:
        with BridgeClient(servers, timeout_s=args.timeout_s, auth=args.auth) as client:
            hello = client.hello()
    except BridgeError as exc:
        print(f"run-sim: server error: {exc}", file=sys.stderr)
        return 1
    settings = replace(settings, inputs=PolicyInputs.from_hello(hello))
    jobs = [WorkerJob(w, args.sim, adapter_settings, settings, eps, servers, args.timeout_s, args.auth)
            for w, eps in enumerate(jobs_episodes)]
    meta = {"sim": args.sim, "task": args.task, "server": ",".join(servers), "seed": args.seed,
            "chunking": {"replan_steps": args.replan_steps, "temporal_ensemble": args.temporal_ensemble}}
    progress = not args.no_progress
    try:
        if args.ray:
            summary = run_on_ray(jobs, settings.episodes, meta, progress, args.ray)
        else:
            summary = run_local(jobs, settings.episodes, meta, progress)
    except RuntimeError as exc:
        print(f"run-sim: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"{summary['workers']} workers" + (f" on Ray ({args.ray})" if args.ray else "") +
          f": {summary['episodes_per_s']:.2f} episodes/s; per worker "
          + ", ".join(f"w{row['worker']} {row['successes']}/{row['episodes']}" for row in summary["per_worker"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    for error in summary["worker_errors"]:
        print(f"run-sim: {error}", file=sys.stderr)
    return 1 if summary["worker_errors"] or summary["episodes"] < settings.episodes else 0
