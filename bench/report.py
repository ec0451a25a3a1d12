"""Benchmark results -> figures judged against docs/targets.md, a table, and JSON files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import ratio

COMMANDS = {
    "transport": "vtla-bridge bench transport",
    "batching": "vtla-bridge bench batching",
    "control": "vtla-bridge bench control",
    "engine": "vtla-bridge bench engine",
    "gpu": "vtla-bridge bench gpu",
    "scaleout": "vtla-bridge bench scaleout",
}


@dataclass(frozen=True)
class Figure:
    benchmark: str
    name: str
    measured: str
    target: str
    met: bool | None  # None: no target (context) or not measured (pending)
    command: str

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "pending" if self.measured == "pending" else "—"
        return "yes" if self.met else "NO"


def _f(value: Any, digits: int = 2, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _p50(entry: Mapping[str, Any] | None, what: str) -> float:
    if not isinstance(entry, Mapping) or what not in entry:
        return math.nan
    return float(entry[what].get("p50_ms", math.nan))


def _judge(value: float, ok: bool) -> bool | None:
    return ok if math.isfinite(value) else None


def transport_figures(result: Mapping[str, Any]) -> list[Figure]:
    cmd = COMMANDS["transport"]
    pending = result.get("pending", {})
    figures: list[Figure] = []
    for label, size in result.get("sizes", {}).items():
        judged = label == "224x224"  # docs/targets.md states the target for a 224x224 frame
        echo = _p50(size.get("zmq_echo"), "round_trip")
        figures.append(
            Figure("transport", f"{label}: pyzmq echo round trip p50", _f(echo, 3, " ms"), "floor", None, cmd)
        )
        bridge: list[float] = []
        # (variant, name, overhead limit x echo, whether the HTTP figures compare against it)
        for key, name, limit, http_baseline in (
            ("bridge_null", "bridge, null policy", 2.0, True),
            ("bridge_vtla", "bridge, tiny VTLA", 2.0, True),
            ("bridge_flat", "bridge, flat-cost policy", 1.3, False),
        ):
            if key not in size:
                continue
            value = _p50(size[key], "overhead")
            if http_baseline:
                bridge.append(value)
            r = ratio(value, echo)
            figures.append(
                Figure(
                    "transport",
                    f"{label}: {name}: overhead p50 (x echo)",
                    f"{_f(value, 3, ' ms')} ({_f(r, 2, 'x')})",
                    f"<= {limit:g}x echo" if judged else "—",
                    _judge(r, r <= limit) if judged else None,
                    cmd,
                )
            )
        if "bridge_flat" in size and "zmq_echo_flat" in size:  # like for like: the floor after the same pause
            echo_flat, bridge_flat = _p50(size["zmq_echo_flat"], "overhead"), _p50(size["bridge_flat"], "overhead")
            r = size.get("ratios", {}).get("bridge_flat_overhead_vs_echo_flat", math.nan)
            figures.append(
                Figure(
                    "transport",
                    f"{label}: bridge, flat-cost policy: overhead p50 (x echo pausing as long)",
                    f"{_f(bridge_flat, 3, ' ms')} vs {_f(echo_flat, 3, ' ms')} ({_f(r, 2, 'x')})",
                    "<= 1.3x echo" if judged else "—",
                    _judge(r, r <= 1.3) if judged else None,
                    cmd,
                )
            )
        if "openpi_flat" in pending:
            figures.append(Figure("transport", f"{label}: bridge vs openpi server, flat-cost policy: round trip p50",
                                  "pending", "<= 1.0x", None, cmd))
        elif "bridge_flat" in size and "openpi_flat" in size:
            r = size.get("ratios", {}).get("bridge_flat_vs_openpi_flat_round_trip_p50", math.nan)
            bridge_rt, openpi_rt = _p50(size["bridge_flat"], "round_trip"), _p50(size["openpi_flat"], "round_trip")
            figures.append(
                Figure(
                    "transport",
                    f"{label}: bridge vs openpi server, flat-cost policy: round trip p50",
                    f"{_f(bridge_rt, 2, ' ms')} vs {_f(openpi_rt, 2, ' ms')} ({_f(r, 3, 'x')})",
                    "<= 1.0x" if judged else "—",
                    _judge(r, r <= 1.0) if judged else None,
                    cmd,
                )
            )
        best_bridge = min(bridge, default=math.nan)
        for key, name in (
            ("http_png", "HTTP /predict, PNG upload"),
            ("http_jpeg_uri", "HTTP /v1/act, JPEG data URI"),
        ):
            target = ">= 10x bridge" if judged and key == "http_png" else "—"
            if key in pending:
                figures.append(
                    Figure("transport", f"{label}: {name}: overhead p50", "pending", target, None, cmd)
                )
                continue
            if key not in size:
                continue
            value = _p50(size[key], "overhead")
            r = ratio(value, best_bridge)
            figures.append(
                Figure(
                    "transport",
                    f"{label}: {name}: overhead p50 (x bridge)",
                    f"{_f(value, 2, ' ms')} ({_f(r, 1, 'x')})",
                    target,
                    _judge(r, r >= 10.0) if target != "—" else None,
                    cmd,
                )
            )
    return figures


def batching_figures(result: Mapping[str, Any]) -> list[Figure]:
    cmd = COMMANDS["batching"]
    ratios = result.get("ratios", {})
    high, low = ratios.get("clients_compared", [32, 1])
    on = float(ratios.get("on_scaling", math.nan))
    off = float(ratios.get("off_scaling", math.nan))
    figures = [
        Figure(
            "batching",
            f"throughput {high} vs {low} client(s), batching on",
            _f(on, 2, "x"),
            ">= 8x",
            _judge(on, on >= 8.0),
            cmd,
        ),
        Figure(
            "batching", f"throughput {high} vs {low} client(s), batching off", _f(off, 2, "x"), "—", None, cmd
        ),
        Figure(
            "batching",
            f"throughput at {high} clients, on vs off",
            _f(float(ratios.get("on_vs_off_at_top", math.nan)), 2, "x"),
            "—",
            None,
            cmd,
        ),
    ]
    for mode, points in result.get("modes", {}).items():
        for p in points:
            if p["clients"] in (low, high):
                figures.append(
                    Figure(
                        "batching",
                        f"batching {mode}, {p['clients']} client(s): throughput, p50/p99, mean batch",
                        f"{_f(p['throughput_rps'], 1, ' req/s')}, {_f(p['latency']['p50_ms'], 1)}/"
                        f"{_f(p['latency']['p99_ms'], 1, ' ms')}, {_f(p['mean_batch_size'], 1)}",
                        "—",
                        None,
                        cmd,
                    )
                )
    return figures


def control_figures(result: Mapping[str, Any]) -> list[Figure]:
    cmd = COMMANDS["control"]
    act = result.get("act", {})
    idle = act.get("idle", {}).get("round_trip", {})
    loaded = act.get("loaded", {}).get("round_trip", {})
    r = float(result.get("ratios", {}).get("p99_loaded_vs_idle", math.nan))
    captions = result.get("captions", {})
    streams = result.get("options", {}).get("streams", 8)
    return [
        Figure(
            "control",
            "act p50/p99 idle",
            f"{_f(idle.get('p50_ms'), 1)}/{_f(idle.get('p99_ms'), 1, ' ms')}",
            "—",
            None,
            cmd,
        ),
        Figure(
            "control",
            f"act p50/p99 with {streams} captions streaming",
            f"{_f(loaded.get('p50_ms'), 1)}/{_f(loaded.get('p99_ms'), 1, ' ms')}",
            "—",
            None,
            cmd,
        ),
        Figure("control", "act p99 loaded / idle", _f(r, 2, "x"), "<= 1.5x", _judge(r, r <= 1.5), cmd),
        Figure(
            "control",
            "act server queue p99 idle / loaded (waits behind VLM work)",
            f"{_f(act.get('idle', {}).get('queue', {}).get('p99_ms'), 1)}/"
            f"{_f(act.get('loaded', {}).get('queue', {}).get('p99_ms'), 1, ' ms')}",
            "—",
            None,
            cmd,
        ),
        Figure(
            "control",
            "captions during the loaded windows: count, tokens/s, TTFT p50",
            f"{captions.get('captions', 0)}, {_f(captions.get('tokens_per_s'), 0)}, "
            f"{_f(captions.get('ttft', {}).get('p50_ms'), 1, ' ms')}",
            "—",
            None,
            cmd,
        ),
    ]


GPU_TARGETS = (
    ("act p50 at batch 1", "<= 8 ms"),
    ("act throughput, 64 clients", ">= 300 obs/s"),
    ("both models resident", "<= 12 GB"),
    ("Moondream TTFT p50 / tokens/s at 1, 8, 32 streams", "—"),
)


def gpu_figures(result: Mapping[str, Any]) -> list[Figure]:
    cmd = COMMANDS["gpu"]
    if result.get("status") == "pending":
        return [Figure("gpu", name, "pending", target, None, cmd) for name, target in GPU_TARGETS]
    p50 = float(result["act_batch1"]["round_trip"]["p50_ms"])
    rps = float(result["act_clients"]["throughput_rps"])
    mem = result.get("memory", {}).get("resident_gb")
    mem_v = float(mem) if isinstance(mem, (int, float)) else math.nan
    captions = result.get("captions", {})
    caption_text = "; ".join(
        f"{n}: {_f(c['ttft']['p50_ms'], 0, ' ms')} / {_f(c['tokens_per_s'], 0, ' tok/s')}"
        for n, c in captions.items()
    )
    return [
        Figure("gpu", GPU_TARGETS[0][0], _f(p50, 1, " ms"), GPU_TARGETS[0][1], _judge(p50, p50 <= 8.0), cmd),
        Figure(
            "gpu", GPU_TARGETS[1][0], _f(rps, 0, " obs/s"), GPU_TARGETS[1][1], _judge(rps, rps >= 300.0), cmd
        ),
        Figure(
            "gpu",
            GPU_TARGETS[2][0],
            _f(mem_v, 2, " GB"),
            GPU_TARGETS[2][1],
            _judge(mem_v, mem_v <= 12.0),
            cmd,
        ),
        Figure("gpu", GPU_TARGETS[3][0], caption_text or "n/a", "—", None, cmd),
    ]


SCALEOUT_TARGETS = {2: 0.9, 4: 0.8}  # x linear, with the endpoint list (issue 13)


def scaleout_figures(result: Mapping[str, Any]) -> list[Figure]:
    cmd = COMMANDS["scaleout"]
    figures: list[Figure] = []
    clients = result.get("options", {}).get("clients", "?")
    for p in result.get("points", []):
        n, mode, eff = p["servers"], p["mode"], float(p.get("efficiency_vs_linear", math.nan))
        target = SCALEOUT_TARGETS.get(n) if mode == "list" else None
        figures.append(Figure(
            "scaleout", f"{n} server(s), {clients} clients, {'endpoint list' if mode == 'list' else 'proxy'}",
            f"{_f(p['throughput_rps'], 0, ' act/s')} ({_f(eff, 2, 'x')} linear, "
            f"{_f(float(p.get('efficiency_vs_capacity', math.nan)), 2)} of capacity)",
            f">= {target}x linear" if target else "—", _judge(eff, eff >= target) if target else None, cmd))
    fo = result.get("failover", {})
    if fo:
        lost, rec = fo.get("replies_lost", math.nan), float(fo.get("all_recovered_s", math.nan))
        figures.append(Figure("scaleout", "failover (1 of 2 killed): every client answered again after",
                              _f(rec, 2, " s"), f"— (timeout_s {fo.get('timeout_s')} s)", None, cmd))
        figures.append(Figure("scaleout", "failover: replies lost", str(lost), "0 (in-flight retried)",
                              lost == 0 if isinstance(lost, int) else None, cmd))
    sims = result.get("sim_workers", {})
    if "ratio" in sims:
        high, low = sims["compared"]
        figures.append(Figure("scaleout", f"run-sim --workers {high} / --workers {low} episodes/s "
                              f"({sims.get('cpu_count')} cores)", _f(float(sims["ratio"]), 2, "x"), "—", None, cmd))
    return figures


def engine_figures(result: Mapping[str, Any]) -> list[Figure]:
    """docs/targets.md targets with the simulated H200 presets (bench/engine.py): the default
    server (``[scheduler] overlap`` on) judged, the overlap-off server beside it as context,
    then the CPU the server and the client processes used."""
    figures = _engine_stage_figures(result, "", True)
    if "overlap_off" in result:
        figures += _engine_stage_figures(result["overlap_off"], " (overlap off)", False)
    cmd = COMMANDS["engine"]
    for variant, runs in result.get("cpu", {}).items():
        server = [r["server_cores"] for r in runs.values() if r.get("server_cores") is not None]
        clients = [r["client_cores"] for r in runs.values()]
        if server and clients:
            figures.append(Figure(
                "engine", f"cores busy during the runs ({variant.replace('_', ' ')}): server / clients",
                f"{_f(min(server), 2)}-{_f(max(server), 2)} / {_f(min(clients), 2)}-{_f(max(clients), 2)}",
                "—", None, cmd,
            ))
    return figures


def _engine_stage_figures(result: Mapping[str, Any], suffix: str, judged_variant: bool) -> list[Figure]:
    cmd = COMMANDS["engine"]
    figures: list[Figure] = []
    targets = {64: 0.90, 256: 0.85}
    for point in result.get("batching", []):
        eff = float(point.get("efficiency") or math.nan)
        n = point["clients"]
        target = targets.get(n) if judged_variant else None
        figures.append(Figure(
            "engine", f"batching efficiency, {n} clients{suffix}",
            f"{_f(eff * 100, 0, ' %')} ({_f(point.get('throughput_rps'), 0)} of {_f(point.get('ideal_rps'), 0)} obs/s)",
            f">= {target * 100:.0f} %" if target else "—", _judge(eff, eff >= target) if target else None, cmd,
        ))
    control = result.get("control", {})
    for key, entry in control.items():
        if not key.startswith("streams_"):
            continue
        r = float(entry.get("p99_vs_idle") or math.nan)
        judged = key == "streams_32" and judged_variant
        figures.append(Figure(
            "engine", f"act p99 with {key.removeprefix('streams_')} caption streams vs idle{suffix}",
            f"{_f(r)}x ({_f(entry['act'].get('p99_ms'), 1)} vs {_f(control['idle']['act'].get('p99_ms'), 1)} ms)",
            "<= 1.25x" if judged else "—", _judge(r, r <= 1.25) if judged else None, cmd,
        ))
        server = entry.get("act_server", {})
        if server.get("p99_ms") is not None and "server_p99_vs_idle" in entry:
            figures.append(Figure(
                "engine", f"act p99 inside the server (timing.server_ms), {key.removeprefix('streams_')} "
                f"streams vs idle{suffix}",
                f"{_f(float(entry['server_p99_vs_idle'] or math.nan))}x ({_f(server['p99_ms'], 1)} vs "
                f"{_f(control['idle']['act_server'].get('p99_ms'), 1)} ms)", "—", None, cmd,
            ))
    gen = result.get("generation", {})
    if gen:
        r = float(gen.get("ratio") or math.nan)
        figures.append(Figure(
            "engine", f"tokens/s of {gen['streams']} streams under {gen['act_clients']}-client act load vs alone"
            f"{suffix}",
            f"{_f(r * 100, 0, ' %')} ({_f(gen.get('loaded_tokens_per_s'), 0)} vs "
            f"{_f(gen.get('alone_tokens_per_s'), 0)})",
            ">= 30 %", _judge(r, r >= 0.30) if judged_variant else None, cmd,
        ))
    cancel = result.get("cancellation", {})
    if cancel:
        steps = cancel.get("decode_steps_to_free")
        from_detection = cancel.get("decode_steps_from_detection")
        figures.append(Figure(
            "engine", f"slots of {cancel['clients']} vanished streaming clients freed{suffix}",
            f"{cancel.get('slots_freed')}/{cancel.get('active_at_close')} in "
            f"{_f(cancel.get('time_to_free_ms'), 1, ' ms')}, {steps} decode steps from the close, "
            f"{from_detection} from detection ({_f(cancel.get('detected_after_ms'), 1, ' ms')} after it)",
            "within 2 decode steps of detection",
            from_detection <= 2 if judged_variant and from_detection is not None else None,
            cmd,
        ))
    fair = result.get("fairness", {})
    if fair:
        r = float(fair.get("p99_ratio") or math.nan)
        figures.append(Figure(
            "engine", f"polite 10 Hz client p99 next to a flooder vs alone{suffix}",
            f"{_f(r)}x ({_f(fair['next_to_flooder'].get('p99_ms'), 1)} vs {_f(fair['alone'].get('p99_ms'), 1)} ms)",
            "<= 1.5x", _judge(r, r <= 1.5) if judged_variant else None, cmd,
        ))
        if fair.get("server_p99_ratio") is not None:
            figures.append(Figure(
                "engine", f"polite client p99 inside the server (timing.server_ms), next to a flooder vs alone{suffix}",
                f"{_f(float(fair['server_p99_ratio']))}x ({_f(fair['next_to_flooder_server'].get('p99_ms'), 1)} vs "
                f"{_f(fair['alone_server'].get('p99_ms'), 1)} ms)", "—", None, cmd,
            ))
    return figures


FIGURES = {
    "transport": transport_figures,
    "batching": batching_figures,
    "control": control_figures,
    "engine": engine_figures,
    "gpu": gpu_figures,
    "scaleout": scaleout_figures,
}


def figures_for(name: str, result: Mapping[str, Any]) -> list[Figure]:
    if result.get("status") == "failed":
        return [
            Figure(name, "benchmark failed", str(result.get("error", ""))[:80], "—", False, COMMANDS[name])
        ]
    return FIGURES[name](result)


def text_table(figures: list[Figure]) -> str:
    rows = [("benchmark", "figure", "measured", "target", "met?")]
    rows += [(f.benchmark, f.name, f.measured, f.target, f.verdict) for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| benchmark | figure | measured | target | met? |", "|---|---|---|---|---|"]
    lines += [f"| {f.benchmark} | {f.name} | {f.measured} | {f.target} | {f.verdict} |" for f in figures]
    return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """NaN/inf -> None (JSON has neither), tuples -> lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_json(path: Path, result: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(result), indent=1, allow_nan=False) + "\n")
    return path
