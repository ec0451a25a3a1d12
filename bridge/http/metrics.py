"""Prometheus metrics of the HTTP companion, from its own observations (text format 0.0.4).

Small on purpose: counters, gauges and histograms with labels, rendered by hand, plus a window
of recent latencies per op for the web UI's status strip.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

LabelValues = tuple[str, ...]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Gauge:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        yield f"{self.name} {_number(self.value)}"


class Histogram:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[LabelValues, tuple[list[int], list[float]]] = {}  # counts per bucket, [sum]

    def observe(self, value: float, *labels: str) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}"


class HttpMetrics:
    """Everything ``GET /metrics`` reports. One instance per app (no globals)."""

    def __init__(self, latency_window: int = 200) -> None:
        self.requests = Counter("vtla_http_requests_total", "HTTP requests by op and status.", ("op", "status"))
        self.errors = Counter("vtla_http_errors_total", "HTTP error responses by op and error code.", ("op", "code"))
        self.duration = Histogram(
            "vtla_http_request_duration_seconds", "HTTP request latency (received -> answered).", ("op",),
            LATENCY_BUCKETS_S,
        )
        self.queue = Histogram(
            "vtla_server_queue_seconds", "Inference server queue time (reply timing.queue_ms).", ("op",),
            LATENCY_BUCKETS_S,
        )
        self.compute = Histogram(
            "vtla_server_compute_seconds", "Model compute of the batch (reply timing.compute_ms).", ("op",),
            LATENCY_BUCKETS_S,
        )
        self.server = Histogram(
            "vtla_server_time_seconds", "Inference server time (reply timing.server_ms).", ("op",), LATENCY_BUCKETS_S
        )
        self.batch_size = Histogram(
            "vtla_server_batch_size", "Size of the batch a request ran in (reply timing.batch_size).", ("op",),
            BATCH_BUCKETS,
        )
        self.queue_depth = Gauge("vtla_server_queue_depth", "Inference server queue depth (last health probe).")
        self.server_up = Gauge("vtla_server_up", "1 when the inference server answers health probes.")
        self.replies_dropped = Gauge(
            "vtla_server_replies_dropped", "Replies the inference server could not deliver (last health probe)."
        )
        self.in_flight = Gauge("vtla_http_in_flight", "HTTP requests being handled.")
        self._window = latency_window
        self.recent_ms: dict[str, deque[float]] = {}

    def observe_request(self, op: str, status: int, duration_s: float, error_code: str | None = None) -> None:
        self.requests.inc(op, str(status))
        self.duration.observe(duration_s, op)
        if error_code is not None:
            self.errors.inc(op, error_code)
        elif status < 400:
            self.recent_ms.setdefault(op, deque(maxlen=self._window)).append(duration_s * 1000.0)

    def observe_timing(self, op: str, timing: Mapping[str, float]) -> None:
        for key, histogram in (("queue_ms", self.queue), ("compute_ms", self.compute), ("server_ms", self.server)):
            value = timing.get(key)
            if isinstance(value, (int, float)):
                histogram.observe(float(value) / 1000.0, op)
        batch = timing.get("batch_size")
        if isinstance(batch, (int, float)):
            self.batch_size.observe(float(batch), op)

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """op -> {"count", "p50_ms", "p90_ms", "last_ms"} over the recent window."""
        summary: dict[str, dict[str, float]] = {}
        for op, values in self.recent_ms.items():
            ordered = sorted(values)
            if not ordered:
                continue
            summary[op] = {
                "count": float(len(ordered)),
                "p50_ms": ordered[(len(ordered) - 1) // 2],
                "p90_ms": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
                "last_ms": values[-1],
            }
        return summary

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.requests, self.errors, self.duration, self.queue, self.compute, self.server, self.batch_size,
            self.queue_depth, self.server_up, self.in_flight, self.replies_dropped,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
