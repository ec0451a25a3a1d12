"""PNG plots of the results: latency CDFs and throughput vs clients (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

logger = logging.getLogger(__name__)


def _cdf(ax: Any, samples_ms: Sequence[float], label: str) -> None:
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if values.size == 0:
        return
    fraction = np.arange(1, values.size + 1) / values.size
    ax.step(values, fraction, where="post", label=f"{label} (n={values.size})")


def _finish(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_transport(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    sizes = result.get("sizes", {})
    if not sizes:
        return []
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.5), squeeze=False)
    for ax, (label, size) in zip(axes[0], sizes.items(), strict=True):
        for name, entry in size.items():
            if isinstance(entry, Mapping) and "round_trip_ms" in entry:
                _cdf(ax, entry["round_trip_ms"], name)
        ax.set_xscale("log")
        ax.set_xlabel("act round trip (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"transport, {label} RGB frame")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return [_finish(fig, out_dir / "transport_cdf.png")]


def plot_batching(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    modes = result.get("modes", {})
    if not modes:
        return []
    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, points in modes.items():
        clients = [p["clients"] for p in points]
        ax_rps.plot(clients, [p["throughput_rps"] for p in points], marker="o", label=f"batching {mode}")
        for q, style in (("p50_ms", "-"), ("p99_ms", "--")):
            ax_lat.plot(
                clients, [p["latency"][q] for p in points], style, marker="o", label=f"{mode} {q[:3]}"
            )
    ax_rps.set_xscale("log", base=2)
    ax_rps.set_xlabel("concurrent clients (processes)")
    ax_rps.set_ylabel("act throughput (req/s)")
    ax_rps.set_title("throughput vs clients (tiny VTLA, CPU)")
    ax_lat.set_xscale("log", base=2)
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("concurrent clients (processes)")
    ax_lat.set_ylabel("act latency (ms, log)")
    ax_lat.set_title("latency vs clients")
    for ax in (ax_rps, ax_lat):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return [_finish(fig, out_dir / "batching_throughput.png")]


def plot_control(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    act = result.get("act", {})
    if not act:
        return []
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    streams = result.get("options", {}).get("streams", "?")
    for phase, entry in act.items():
        label = phase if phase == "idle" else f"{phase} ({streams} captions streaming)"
        _cdf(ax, entry.get("round_trip_ms", []), label)
    ax.set_xscale("log")
    ax.set_xlabel("act round trip (ms, log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("control latency under VLM load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return [_finish(fig, out_dir / "control_cdf.png")]


PLOTTERS = {"transport": plot_transport, "batching": plot_batching, "control": plot_control}


def plot(name: str, result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """The plots of benchmark ``name`` (none for failed/pending results or benchmarks without plots)."""
    plotter = PLOTTERS.get(name)
    if plotter is None or result.get("status") in ("failed", "pending"):
        return []
    return plotter(result, out_dir)
