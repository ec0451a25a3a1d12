"""``vtla-bridge bench engine``: the inference loop at GPU timing, with the ``simulated`` H200 presets.

One server process serves ``[policy] kind = "simulated"`` (nano-2b-h200) and ``[vlm] kind =
"simulated"`` (moondream2-h200): every forward, admission unit and decode step waits for the time
the real model would take on an H200 (models/simulated), so the figures measure the bridge and
its scheduling policy, not this machine's CPU. Closed-loop clients run as separate processes
(up to 64 clients per process on one asyncio loop, one DEALER socket each). Side by side:

* batching efficiency: act throughput at 1/8/64/256 clients ÷ the cost model's ideal at that batch;
* control under generation: act p50/p99 of one paced client idle vs with 8 and 32 caption streams;
* generation under control load: tokens/s of 8 caption streams next to 64 closed-loop act clients ÷ alone;
* cancellation: 32 streaming clients vanish mid-caption: slots freed, time and decode steps to free them;
* fairness: a polite 10 Hz client's p99 alone vs next to one client flooding as fast as it can.

Two servers run side by side, ``[scheduler] overlap = false`` and ``true`` (acts beside a
launched decode step, docs/architecture.md); every stage runs on one, then the other, so both
see the same host minute. The top-level figures are overlap on (the default);
``overlap_off`` holds the same stages with it off.

What limits it: the clients share this machine's cores with the server; on a 2-core box the
client processes' msgpack/socket work competes with the server's I/O thread. Each run records
the CPU the server process and the client processes used (``cpu``: cores busy, from
/proc/<pid>/stat and each client process's own process time). In the two p99 stages the load
generators (the caption streams, the flooder) run at ``nice`` ``load_nice`` (10), so that the
measured client's own late wake-ups on a shared host are not what its p99 measures.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.engine_clients import ClientGroup, ClientProcesses, GroupResult, split
from bench.processes import ServerProcess
from bench.stats import finite_or_none, ratio, summarize
from bridge.client import BridgeClient
from bridge.errors import BridgeError

logger = logging.getLogger(__name__)

POLICY = {"kind": "simulated", "preset": "nano-2b-h200"}
VLM = {"kind": "simulated", "preset": "moondream2-h200"}


@dataclass(frozen=True)
class EngineOptions:
    clients: tuple[int, ...] = (1, 8, 64, 256)
    caption_streams: tuple[int, ...] = (8, 32)
    control_rate_hz: float = 50.0  # the act client measured under caption load (a robot control loop)
    generation_streams: int = 8
    saturating_clients: int = 64
    vanishing_clients: int = 32
    polite_rate_hz: float = 10.0
    warmup_s: float = 1.0
    duration_s: float = 4.0
    # the p99 stages (control, fairness) measure longer: a 10 Hz client gives 40 samples in 4 s, so
    # its "p99" was its largest sample or two and swung 1.2-2.5x between runs of the same code
    latency_duration_s: float = 12.0
    max_batch: int = 64
    max_batch_ms: float = 12.0  # [scheduler] max_batch_ms: ~2 rows of nano-2b-h200 (5.7 ms at 1 row)
    overlap: tuple[bool, ...] = (False, True)  # [scheduler] overlap of the servers compared
    # the p99 stages' load generators (caption streams, the flooder) run at this nice, so that on
    # a small host the measured client's own wake-ups are not what its p99 measures (0: off)
    load_nice: int = 10

    def quick(self) -> EngineOptions:
        return replace(self, clients=(1, 8, 64), caption_streams=(8,), saturating_clients=32, vanishing_clients=8,
                       warmup_s=0.5, duration_s=1.5, latency_duration_s=1.5)


def _table(options: EngineOptions, overlap: bool) -> dict[str, Any]:
    return {
        "policy": dict(POLICY),
        "vlm": dict(VLM),
        "batching": {"max_batch": options.max_batch},
        "scheduler": {"max_batch_ms": options.max_batch_ms, "overlap": overlap},
        "device": {"device": "cpu", "dtype": "float32"},  # the simulated device is the preset's
        "server": {"max_inflight": 2048, "max_inflight_per_client": 64},
    }


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class _Target:
    """One server under test, and the CPU it and its clients used in each run (cores busy)."""

    endpoint: str
    pid: int | None
    cpu: dict[str, dict[str, Any]]
    stage: str = ""

    def record(self, label: str, server_cpu_s: float | None, wall_s: float, results: list[GroupResult]) -> None:
        clients = sum(r.cpu_s for r in results)
        self.cpu[f"{self.stage}/{label}"] = {
            "server_cores": server_cpu_s / wall_s if server_cpu_s is not None and wall_s > 0 else None,
            "client_cores": sum(r.cpu_s / r.wall_s for r in results if r.wall_s > 0),
            "client_cpu_s": clients,
            "client_processes": len(results),
        }


def _run(server: _Target, options: EngineOptions, *groups: dict[str, Any]) -> list[GroupResult]:
    specs = [ClientGroup(endpoint=server.endpoint, start_at=0.0, warmup_s=options.warmup_s,
                         duration_s=options.duration_s, **g) for g in groups]
    processes = ClientProcesses(specs)
    start: list[tuple[float | None, float]] = []  # the server's CPU time and the clock when the clients start

    def started(start_at: float) -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        start.append((process_cpu_s(server.pid), time.monotonic()))

    results = processes.run(ready_timeout_s=120.0, lead_s=0.2, timeout_s=options.warmup_s + options.duration_s + 60,
                            on_start=started)
    after_s = process_cpu_s(server.pid)
    before_s, started_s = start[0] if start else (None, time.monotonic())
    wall_s = time.monotonic() - started_s  # to the last client's result (a few ms after its window)
    used = after_s - before_s if after_s is not None and before_s is not None else None
    label = "+".join(f"{g['kind']}x{g['count']}" for g in groups)
    server.record(label, used, wall_s, results)
    return results


def _acts(results: list[GroupResult]) -> list[GroupResult]:
    return [r for r in results if r.kind == "act"]


def _batching(server: _Target, options: EngineOptions, ideal_rps: dict[int, float]) -> list[dict[str, Any]]:
    points = []
    for n in options.clients:
        results = _run(server, options, *({"kind": "act", "count": c} for c in split(n)))
        rps = sum(r.completed for r in results) / options.duration_s
        batch = min(n, options.max_batch)
        points.append({
            "clients": n,
            "throughput_rps": rps,
            "ideal_rps": ideal_rps[batch],
            "efficiency": ratio(rps, ideal_rps[batch]),
            "latency": summarize([v for r in results for v in r.latencies_ms]).as_dict(),
            "errors": _errors(results),
        })
        logger.info("batching %d clients: %.1f obs/s (ideal %.1f)", n, rps, ideal_rps[batch])
    return points


def _errors(results: list[GroupResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for code, count in r.errors.items():
            out[code] = out.get(code, 0) + count
    return out


def _control(server: _Target, options: EngineOptions) -> dict[str, Any]:
    options = replace(options, duration_s=options.latency_duration_s)
    control = {"kind": "act", "count": 1, "rate_hz": options.control_rate_hz}
    out: dict[str, Any] = {"rate_hz": options.control_rate_hz}
    for streams in (0, *options.caption_streams):
        groups = [control] + ([{"kind": "caption", "count": streams, "nice": options.load_nice}] if streams else [])
        results = _run(server, options, *groups)
        act = _acts(results)[0]
        tokens = sum(r.tokens for r in results if r.kind == "caption")
        out["idle" if not streams else f"streams_{streams}"] = {
            "act": summarize(act.latencies_ms).as_dict(),
            "act_server": summarize(act.server_ms).as_dict(),  # inside the server: no client-side noise
            "tokens_per_s": tokens / options.duration_s,
        }
    idle_p99 = out["idle"]["act"]["p99_ms"]
    for streams in options.caption_streams:
        entry = out[f"streams_{streams}"]
        entry["p99_vs_idle"] = ratio(entry["act"]["p99_ms"], idle_p99)
        entry["server_p99_vs_idle"] = ratio(entry["act_server"]["p99_ms"], out["idle"]["act_server"]["p99_ms"])
    return out


def _generation(server: _Target, options: EngineOptions) -> dict[str, Any]:
    captions = {"kind": "caption", "count": options.generation_streams}
    alone = _run(server, options, captions)
    loaded = _run(server, options, captions, *({"kind": "act", "count": c} for c in split(options.saturating_clients)))
    alone_tps = sum(r.tokens for r in alone) / options.duration_s
    loaded_tps = sum(r.tokens for r in loaded if r.kind == "caption") / options.duration_s
    acts_rps = sum(r.completed for r in _acts(loaded)) / options.duration_s
    return {
        "streams": options.generation_streams,
        "act_clients": options.saturating_clients,
        "alone_tokens_per_s": alone_tps,
        "loaded_tokens_per_s": loaded_tps,
        "loaded_act_rps": acts_rps,
        "ratio": ratio(loaded_tps, alone_tps),
    }


def _cancellation(server: _Target, options: EngineOptions) -> dict[str, Any]:
    """Clients vanish mid-caption; a monitor thread polls ``health`` for the slots still held, the
    decode steps run and the replies the server could not deliver (``replies_dropped_peer_gone``:
    the first one is when the failure became detectable to it)."""
    samples: list[tuple[float, int, int, int]] = []  # (monotonic, active slots, decode steps, dropped)
    stop = threading.Event()

    def monitor() -> None:
        with BridgeClient(server.endpoint, timeout_s=5.0) as client:
            while not stop.is_set():
                try:
                    health = client.health()
                except BridgeError:
                    continue
                samples.append((time.monotonic(), health["generation"]["active"], health["counters"]["decode_steps"],
                                health["transport"]["replies_dropped_peer_gone"]))
                time.sleep(0.001)

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    try:
        results = _run(server, replace(options, warmup_s=0.0, duration_s=0.0),
                       {"kind": "vanish", "count": options.vanishing_clients})
        closed_at = results[0].closed_at
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (samples and samples[-1][0] > closed_at and samples[-1][1] == 0):
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(5.0)
    return cancellation_figures(samples, closed_at, options.vanishing_clients)


def cancellation_figures(
    samples: list[tuple[float, int, int, int]], closed_at: float, clients: int
) -> dict[str, Any]:
    """The cancellation stage's figures from the monitor's (time, active slots, decode steps,
    replies dropped) samples. Steps are counted from the last sample before the close, and from
    the last sample before the first dropped reply (detection; a sample later than the true moment
    by up to one poll, so the count errs high, never low)."""
    before = [s for s in samples if s[0] <= closed_at]
    after = [s for s in samples if s[0] > closed_at]
    freed_at = next((s for s in after if s[1] == 0), None)
    active_at_close = before[-1][1] if before else clients
    steps_at_close = before[-1][2] if before else 0
    dropped_at_close = before[-1][3] if before else 0
    detected = next((i for i, s in enumerate(samples) if s[0] > closed_at and s[3] > dropped_at_close), None)
    # the sample before the first drop was seen: the drop happened after it
    steps_at_detection = samples[detected - 1][2] if detected is not None and detected > 0 else None
    detected_ms = (samples[detected][0] - closed_at) * 1000.0 if detected is not None else None
    return {
        "clients": clients,
        "active_at_close": active_at_close,
        "slots_freed": active_at_close - (after[-1][1] if after else active_at_close),
        "time_to_free_ms": (freed_at[0] - closed_at) * 1000.0 if freed_at else None,
        "decode_steps_to_free": freed_at[2] - steps_at_close if freed_at else None,
        "detected_after_ms": detected_ms,  # close -> the server's first failed delivery (seen by the monitor)
        "decode_steps_from_detection": (
            freed_at[2] - steps_at_detection if freed_at and steps_at_detection is not None else None
        ),
    }


def _fairness(server: _Target, options: EngineOptions) -> dict[str, Any]:
    options = replace(options, duration_s=options.latency_duration_s)
    polite = {"kind": "act", "count": 1, "rate_hz": options.polite_rate_hz, "label": "polite"}
    alone = _acts(_run(server, options, polite))[0]
    flood = {"kind": "act", "count": 1, "depth": 64, "label": "flooder", "nice": options.load_nice}
    crowded = {r.label: r for r in _run(server, options, polite, flood)}
    polite_crowded, flooder = crowded["polite"], crowded["flooder"]
    alone_p99 = summarize(alone.latencies_ms).p99_ms
    crowded_p99 = summarize(polite_crowded.latencies_ms).p99_ms
    alone_server, crowded_server = summarize(alone.server_ms), summarize(polite_crowded.server_ms)
    return {
        "polite_rate_hz": options.polite_rate_hz,
        "alone": summarize(alone.latencies_ms).as_dict(),
        "next_to_flooder": summarize(polite_crowded.latencies_ms).as_dict(),
        "alone_server": alone_server.as_dict(),  # timing.server_ms: inside the server, no client-side noise
        "next_to_flooder_server": crowded_server.as_dict(),
        "flooder_rps": flooder.completed / options.duration_s,
        "p99_ratio": ratio(crowded_p99, alone_p99),
        "server_p99_ratio": ratio(crowded_server.p99_ms, alone_server.p99_ms),
    }


def _variant(overlap: bool) -> str:
    return "overlap_on" if overlap else "overlap_off"


def run_engine(options: EngineOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    from models.simulated.policy import SimulatedPolicy
    from vtla_contracts.model_spec import ModelSpec

    cost_model = SimulatedPolicy(ModelSpec(POLICY["kind"], POLICY["preset"]))
    batches = sorted({min(n, options.max_batch) for n in options.clients})
    ideal_rps = {b: b / cost_model.forward_ms(b) * 1000.0 for b in batches}
    work_dir.mkdir(parents=True, exist_ok=True)
    servers = [ServerProcess(f"engine-{_variant(o)}", _table(options, o), work_dir) for o in options.overlap]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        targets = {o: _Target(s.endpoint, s.pid, {}) for o, s in zip(options.overlap, servers, strict=True)}
        per_variant: dict[bool, dict[str, Any]] = {o: {} for o in options.overlap}
        stages = (("batching", lambda t: _batching(t, options, ideal_rps)),
                  ("control", lambda t: _control(t, options)),
                  ("generation", lambda t: _generation(t, options)),
                  ("cancellation", lambda t: _cancellation(t, options)),
                  ("fairness", lambda t: _fairness(t, options)))
        for name, stage in stages:
            for overlap, target in targets.items():  # alternating: both variants see the same host minute
                logger.info("bench engine: %s, %s", name, _variant(overlap))
                target.stage = name
                per_variant[overlap][name] = stage(target)
        hello = servers[-1].hello
    finally:
        for server in servers:
            server.stop()
    main = options.overlap[-1]
    result: dict[str, Any] = {
        "options": options.__dict__,
        "cost_model": {"forward_ms": {b: cost_model.forward_ms(b) for b in batches}, "ideal_rps": ideal_rps},
        "simulated": hello["models"]["vtla"].get("simulation"),
        "client_limits": f"client processes share the host's {os.cpu_count()} cores with the server",
        "overlap": main,
        **per_variant[main],
        "cpu": {_variant(o): t.cpu for o, t in targets.items()},
    }
    for overlap in options.overlap:
        if overlap != main:
            result[_variant(overlap)] = per_variant[overlap]
    return _finite(result)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return finite_or_none(value) if isinstance(value, float) else value
