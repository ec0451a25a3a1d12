"""Latency summaries: percentiles, medians, ratios, as plain JSON-ready dicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a list of durations (milliseconds)."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> LatencySummary:
    """Summary of ``samples_ms``; an empty list gives NaN figures with ``n == 0``."""
    if len(samples_ms) == 0:
        nan = math.nan
        return LatencySummary(0, nan, nan, nan, nan, nan, nan)
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencySummary(
        n=int(values.size),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
    )


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is not positive."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return numerator / denominator


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: missing figures are written as null."""
    return value if math.isfinite(value) else None
