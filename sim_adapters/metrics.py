"""Per-episode records and the run summary (success rate, lengths, latency percentiles)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StepTiming:
    round_trip_ms: float  # client send -> reply received
    server_ms: float  # server received -> reply sent (the server's own clock)

    @property
    def transport_ms(self) -> float:
        """Everything outside the server: encoding, sockets, decoding."""
        return max(0.0, self.round_trip_ms - self.server_ms)


@dataclass
class EpisodeResult:
    index: int
    seed: int | None
    success: bool
    steps: int
    queries: int
    wall_s: float
    overruns: int = 0  # control steps that took longer than the control period
    timings: list[StepTiming] = field(default_factory=list)


def percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "mean": float(arr.mean()),
    }


def summarize(episodes: Sequence[EpisodeResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary written by ``--json`` (and printed as a table)."""
    timings = [t for ep in episodes for t in ep.timings]
    successes = sum(ep.success for ep in episodes)
    n = len(episodes)
    return {
        **meta,
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "episode_length": {
            "mean": float(np.mean([ep.steps for ep in episodes])) if n else 0.0,
            "min": min((ep.steps for ep in episodes), default=0),
            "max": max((ep.steps for ep in episodes), default=0),
        },
        "steps": sum(ep.steps for ep in episodes),
        "queries": len(timings),
        "overruns": sum(ep.overruns for ep in episodes),
        "latency_ms": {
            "round_trip": percentiles_ms([t.round_trip_ms for t in timings]),
            "server": percentiles_ms([t.server_ms for t in timings]),
            "transport": percentiles_ms([t.transport_ms for t in timings]),
        },
        "per_episode": [
            {k: v for k, v in asdict(ep).items() if k != "timings"} for ep in episodes
        ],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    length = summary["episode_length"]
    lines = [
        f"{summary.get('sim', '?')} {summary.get('task', '?')}: {summary['successes']}/{summary['episodes']} "
        f"successful ({100 * summary['success_rate']:.0f} %), episode length mean {length['mean']:.1f} "
        f"[{length['min']}..{length['max']}] steps",
        f"per-query latency over {summary['queries']} queries (ms):   p50      p99",
    ]
    for name in ("round_trip", "server", "transport"):
        lines.append(f"  {name:<12} {lat[name]['p50']:8.2f} {lat[name]['p99']:8.2f}")
    if summary.get("overruns"):
        lines.append(f"  control steps over the period: {summary['overruns']}")
    return "\n".join(lines)
