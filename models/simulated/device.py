"""An accelerator as a roofline: peak bf16 FLOP/s, HBM bandwidth, efficiency factors, launch cost.

``phase_ms`` is the one function from counted work to milliseconds:

    ms = max(flops / (peak_flops * compute_efficiency), bytes / (hbm_bytes_per_s * memory_efficiency)) * 1e3
         + kernels * kernel_launch_us / 1e3

A phase is either compute-bound or memory-bound (whichever roof is lower); every kernel also
pays a fixed launch/dependency gap that is not hidden behind the previous kernel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vtla_contracts.errors import ConfigError


@dataclass(frozen=True)
class DeviceWork:
    """Counted cost of one phase (a forward, a prefill, a decode step)."""

    flops: float
    bytes_moved: float
    kernels: int

    def __add__(self, other: DeviceWork) -> DeviceWork:
        return DeviceWork(self.flops + other.flops, self.bytes_moved + other.bytes_moved, self.kernels + other.kernels)


@dataclass(frozen=True)
class PhaseTimes:
    """One unit's compute time, memory time and launch gaps (ms) at the device's achievable rates."""

    compute_ms: float
    memory_ms: float
    launch_ms: float

    @property
    def alone_ms(self) -> float:
        """Its time alone on the device: the binding roof plus the launch gaps."""
        return max(self.compute_ms, self.memory_ms) + self.launch_ms


@dataclass(frozen=True)
class DeviceModel:
    name: str
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bytes_per_s: float
    compute_efficiency: float  # achievable fraction of peak_flops for these GEMM shapes
    memory_efficiency: float  # achievable fraction of hbm_bytes_per_s for streaming reads
    kernel_launch_us: float  # per kernel, not overlapped with the previous kernel's execution

    def __post_init__(self) -> None:
        for name in ("peak_flops", "hbm_bytes_per_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"simulated device {name} must be > 0")
        for name in ("compute_efficiency", "memory_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"simulated device {name} must be in (0, 1]")
        if self.kernel_launch_us < 0:
            raise ConfigError("simulated device kernel_launch_us must be >= 0")

    def phase_times(self, work: DeviceWork) -> PhaseTimes:
        """The unit's compute time, memory time and launch gaps (ms), each at the achievable rate."""
        return PhaseTimes(
            work.flops / (self.peak_flops * self.compute_efficiency) * 1e3,
            work.bytes_moved / (self.hbm_bytes_per_s * self.memory_efficiency) * 1e3,
            work.kernels * self.kernel_launch_us / 1e3,
        )

    def phase_ms(self, work: DeviceWork) -> float:
        return self.phase_times(work).alone_ms


def wait_ms(duration_ms: float) -> float:
    """Block the calling thread for ``duration_ms`` with the GIL released; -> the time waited (ms).

    ``time.sleep`` overshoots by the OS timer slack (tens of microseconds on Linux); the
    returned figure is the measured wait, so reported compute times are honest.
    """
    start_s = time.perf_counter()
    if duration_ms > 0:
        time.sleep(duration_ms / 1e3)
    return (time.perf_counter() - start_s) * 1e3
