"""Two CUDA streams on one simulated device: a decode step in flight and an ``act`` beside it.

On a GPU the loop thread launches a decode step on a normal-priority stream and returns at once;
an ``act`` forward launched meanwhile on a **high-priority** stream runs concurrently. How the two
share the device is modelled as a *shared roofline* (the rule, stated once):

* a unit of work alone takes ``T = max(C, M) + L``: ``C`` its compute time and ``M`` its memory
  time at the device's achievable rates, ``L`` its un-hidden kernel launch gaps
  (:meth:`DeviceModel.phase_times`). Its progress rate is at most ``1 / T`` (it cannot go faster
  than alone: its own launch gaps and kernel dependencies); at rate ``r`` it uses the fraction
  ``C * r`` of the device's compute and ``M * r`` of its memory bandwidth. The other stream's
  kernels fill a unit's launch gaps (that is what two streams are for);
* **compute goes to the high-priority unit first** (the block scheduler dispatches the
  high-priority stream's pending blocks first): it runs at ``1 / T_hi`` and uses ``C_hi / T_hi``
  of the compute; the normal-priority unit gets at most the rest, ``(1 - C_hi / T_hi) / C_lo``;
* **memory bandwidth is shared** (HBM does not know stream priorities): if the two demands
  ``M_hi * r_hi + M_lo * r_lo`` exceed the bandwidth, both rates are scaled by the same factor
  so that they fill it exactly (bandwidth in proportion to demand);
* when one of them finishes, the other continues alone at its own ``1 / T``.

No constant beyond the device file's is needed. The rule ignores SM co-residency limits (a
compute-bound GEMM that fills every SM leaves no room for the decode's blocks while its kernels
run, except in its launch gaps), so it is optimistic for the normal-priority unit; it is a
modelling assumption pending a two-stream measurement on the H200 (docs/simulated.md).

:class:`DeviceStreams` applies the rule in real time: the decode step in flight is tracked as the
fraction of its work left; every high-priority unit run meanwhile advances it, stretches it and
is itself stretched. One :class:`DeviceStreams` per device and per thread (:func:`streams_for`):
like CUDA's current stream, it belongs to the thread that launches work — the inference loop
thread, which owns the device — so two servers in one process never share a simulated device.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from models.simulated.device import DeviceModel, PhaseTimes


@dataclass(frozen=True)
class Overlap:
    """A high-priority unit started while a normal-priority unit had ``lo_left`` of its work left."""

    hi_ms: float  # the high-priority unit's duration
    lo_end_ms: float  # from the high-priority unit's start until the normal-priority unit is done
    lo_left_at_hi_end: float  # fraction of the normal-priority unit's work left when hi ended (0: done)


def concurrent_rates(hi: PhaseTimes, lo: PhaseTimes) -> tuple[float, float]:
    """Progress rates (fractions of the unit per ms) of the two units while both run."""
    r_hi = 1.0 / hi.alone_ms if hi.alone_ms > 0 else float("inf")
    r_lo = 1.0 / lo.alone_ms if lo.alone_ms > 0 else float("inf")
    if hi.alone_ms > 0 and lo.compute_ms > 0:
        compute_left = max(0.0, 1.0 - hi.compute_ms * r_hi)
        r_lo = min(r_lo, compute_left / lo.compute_ms)
    memory_demand = hi.memory_ms * r_hi + lo.memory_ms * r_lo
    if memory_demand > 1.0:
        r_hi, r_lo = r_hi / memory_demand, r_lo / memory_demand
    return r_hi, r_lo


def overlap(hi: PhaseTimes, lo: PhaseTimes, lo_left: float = 1.0) -> Overlap:
    """The shared-roofline rule (module docstring) for one high-priority unit beside one in flight."""
    if lo_left <= 0.0 or lo.alone_ms <= 0.0:
        return Overlap(hi.alone_ms, 0.0, 0.0)
    if hi.alone_ms <= 0.0:
        return Overlap(0.0, lo_left * lo.alone_ms, lo_left)
    r_hi, r_lo = concurrent_rates(hi, lo)
    hi_done_ms = 1.0 / r_hi
    lo_done_ms = lo_left / r_lo if r_lo > 0 else float("inf")
    if hi_done_ms <= lo_done_ms:  # hi ends first; lo goes on alone
        left = lo_left - r_lo * hi_done_ms
        return Overlap(hi_done_ms, hi_done_ms + left * lo.alone_ms, left)
    hi_left = 1.0 - r_hi * lo_done_ms  # lo ends first; hi goes on alone
    return Overlap(lo_done_ms + hi_left * hi.alone_ms, lo_done_ms, 0.0)


def _sleep_until(deadline_s: float) -> None:
    remaining_s = deadline_s - time.perf_counter()
    if remaining_s > 0:
        time.sleep(remaining_s)  # releases the GIL


class DeviceStreams:
    """One simulated device's normal-priority unit in flight (at most one) and the high-priority units beside it."""

    def __init__(self) -> None:
        self._lo: PhaseTimes | None = None
        self._lo_left = 0.0  # fraction of the in-flight unit's work left at _lo_at_s
        self._lo_at_s = 0.0
        self._lo_launched_s = 0.0
        self.overlapped_units = 0  # high-priority units that ran beside a unit in flight (tests read it)

    @property
    def in_flight(self) -> bool:
        return self._lo is not None

    def launch(self, lo: PhaseTimes) -> None:
        """Enqueue a normal-priority unit; returns at once."""
        if self._lo is not None:
            raise RuntimeError("a normal-priority unit is already in flight on this simulated device")
        now_s = time.perf_counter()
        self._lo, self._lo_left, self._lo_at_s, self._lo_launched_s = lo, 1.0, now_s, now_s

    def _advance_alone(self, now_s: float) -> None:
        assert self._lo is not None
        if self._lo_left > 0 and now_s > self._lo_at_s:
            self._lo_left = max(0.0, self._lo_left - (now_s - self._lo_at_s) * 1e3 / self._lo.alone_ms)
        self._lo_at_s = max(self._lo_at_s, now_s)

    def done(self) -> bool:
        """True when the unit in flight has finished (or none is in flight); no waiting."""
        if self._lo is None:
            return True
        self._advance_alone(time.perf_counter())
        return self._lo_left <= 0.0

    def finish(self) -> float:
        """Wait until the unit in flight is done -> its time from launch to done (ms)."""
        if self._lo is None:
            raise RuntimeError("finish without a launched unit")
        now_s = time.perf_counter()
        self._advance_alone(now_s)
        done_s = self._lo_at_s + self._lo_left * self._lo.alone_ms / 1e3
        _sleep_until(done_s)
        self._lo = None
        return (done_s - self._lo_launched_s) * 1e3

    def run(self, hi: PhaseTimes) -> float:
        """Run a high-priority unit now (waiting its time, GIL released) -> ms waited."""
        start_s = time.perf_counter()
        hi_ms = hi.alone_ms
        if self._lo is not None:
            self._advance_alone(start_s)
            if self._lo_left > 0:
                result = overlap(hi, self._lo, self._lo_left)
                hi_ms = result.hi_ms
                self.overlapped_units += 1
                if result.lo_left_at_hi_end > 0:
                    self._lo_left, self._lo_at_s = result.lo_left_at_hi_end, start_s + hi_ms / 1e3
                else:  # done during hi: park it at its completion time
                    self._lo_left, self._lo_at_s = 0.0, start_s + result.lo_end_ms / 1e3
        _sleep_until(start_s + hi_ms / 1e3)
        return (time.perf_counter() - start_s) * 1e3


_PER_THREAD = threading.local()


def streams_for(device: DeviceModel) -> DeviceStreams:
    """This thread's streams of the device named ``device.name``: the policy and the generator of
    one loop share them (each unit's times come from its own model's device figures)."""
    table: dict[str, DeviceStreams] | None = getattr(_PER_THREAD, "devices", None)
    if table is None:
        table = _PER_THREAD.devices = {}
    return table.setdefault(device.name, DeviceStreams())
