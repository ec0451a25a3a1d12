"""Benchmark 3: control under VLM load — ``act`` latency alone, and while 8 Moondream captions stream.

One server (tiny VTLA + tiny Moondream, CPU). A control client sends ``act`` at a fixed rate,
as a simulator would; idle and loaded windows alternate (idle, loaded, loaded, idle, ...). In
a loaded window a separate process keeps ``streams`` caption streams going; the ``act``
samples are taken after a short ramp, so the captions are in steady state. The target compares
the p99 ``act`` latency under load with the idle p99.
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

from bench.caption_load import CaptionCommand, CaptionLoad, CaptionLoadResult, span_s, summarize_captions
from bench.frames import scene_frame
from bench.processes import ServerProcess, server_table
from bench.stats import ratio, summarize
from bridge.client import BridgeClient

logger = logging.getLogger(__name__)

PHASES = ("idle", "loaded")


@dataclass(frozen=True)
class ControlOptions:
    streams: int = 8
    rate_hz: float = 50.0  # act requests per second of the control client
    window_s: float = 5.0  # act sampling per window
    repeats: int = 4  # windows per phase, alternating
    ramp_s: float = 1.0  # captions run this long before act samples count
    frame_hw: tuple[int, int] = (224, 224)
    caption_frame_hw: tuple[int, int] = (378, 378)
    max_tokens: int = 64
    vlm_preset: str = "tiny"
    torch_threads: int | None = 1
    timeout_s: float = 60.0


@dataclass
class _ActSamples:
    round_trip_ms: list[float]
    queue_ms: list[float]  # server: received -> forward started (waiting for a decode step/admission)
    compute_ms: list[float]


def _act_window(client: BridgeClient, frame: Any, rate_hz: float, window_s: float, out: _ActSamples) -> None:
    """``act`` at ``rate_hz`` for ``window_s``; never bursts to catch up after a slow reply."""
    period_s = 1.0 / rate_hz
    end = time.monotonic() + window_s
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            return
        if next_at > now:
            time.sleep(next_at - now)
        result = client.act(image=frame)
        out.round_trip_ms.append(result.round_trip_ms)
        out.queue_ms.append(float(result.timing.get("queue_ms", 0.0)))
        out.compute_ms.append(float(result.timing.get("compute_ms", 0.0)))
        next_at = max(next_at + period_s, time.monotonic())


def run_control(options: ControlOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    table = server_table(vlm={"enabled": True, "kind": "moondream", "preset": options.vlm_preset})
    samples = {phase: _ActSamples([], [], []) for phase in PHASES}
    captions = CaptionLoadResult()
    loaded_window_s = 0.0
    with ExitStack() as stack:
        server = ServerProcess("control-server", table, work_dir, options.torch_threads).launch()
        stack.callback(server.stop)
        load = stack.enter_context(CaptionLoad())
        server.wait_ready()
        client = stack.enter_context(BridgeClient(server.endpoint, timeout_s=options.timeout_s))
        frame = scene_frame(*options.frame_hw, seed=1)
        for _ in range(10):  # warm the path (first requests allocate)
            client.act(image=frame)
        steps = [phase for r in range(options.repeats) for phase in (PHASES if r % 2 == 0 else PHASES[::-1])]
        for phase in tqdm(steps, desc="control", file=sys.stderr, disable=not progress, leave=False):
            if phase == "idle":
                _act_window(client, frame, options.rate_hz, options.window_s, samples[phase])
                continue
            start_at = time.monotonic() + 0.1
            command = CaptionCommand(
                endpoint=server.endpoint,
                streams=options.streams,
                start_at=start_at,
                end_at=start_at + options.ramp_s + options.window_s,
                frame_hw=options.caption_frame_hw,
                max_tokens=options.max_tokens,
                timeout_s=options.timeout_s,
            )
            load.begin(command)
            time.sleep(max(0.0, start_at + options.ramp_s - time.monotonic()))
            _act_window(client, frame, options.rate_hz, options.window_s, samples[phase])
            window = load.collect()
            captions.records.extend(window.records)
            for code, count in window.errors.items():
                captions.errors[code] = captions.errors.get(code, 0) + count
            loaded_window_s += span_s(window)
        models = dict(server.hello.get("models", {}))
    summaries: dict[str, dict[str, Any]] = {
        phase: {
            "round_trip": summarize(s.round_trip_ms).as_dict(),
            "queue": summarize(s.queue_ms).as_dict(),
            "compute": summarize(s.compute_ms).as_dict(),
            "round_trip_ms": s.round_trip_ms,
        }
        for phase, s in samples.items()
    }
    idle = summarize(samples["idle"].round_trip_ms)
    loaded = summarize(samples["loaded"].round_trip_ms)
    return {
        "options": {**options.__dict__},
        "models": models,
        "act": summaries,
        "captions": summarize_captions(captions, loaded_window_s),
        "ratios": {
            "p99_loaded_vs_idle": ratio(loaded.p99_ms, idle.p99_ms),
            "p50_loaded_vs_idle": ratio(loaded.p50_ms, idle.p50_ms),
        },
    }
