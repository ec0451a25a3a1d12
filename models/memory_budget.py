"""What a loaded model needs on its device: weights, KV cache, the largest activation bucket, staging.

Reported in ``hello`` (each model's ``describe()["memory"]``) and checked before the big
allocations on CUDA: a configuration that cannot fit raises :class:`MemoryBudgetError` naming the
option to change, instead of failing later with an out-of-memory error mid-request.
Activation figures are estimates (the largest intermediate tensors of the largest shape the
model runs, x2 for input and output alive together), not allocator measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vtla_contracts.errors import ConfigError


class MemoryBudgetError(ConfigError):
    """The configured model does not fit the device's memory (a configuration to change)."""


@dataclass(frozen=True)
class MemoryBudget:
    weights_bytes: int
    kv_cache_bytes: int
    largest_activation_bytes: int
    staging_bytes: int = 0  # input rows kept resident on the device (the VTLA's frame rings)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.largest_activation_bytes + self.staging_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "largest_activation_bytes": self.largest_activation_bytes,
            "staging_bytes": self.staging_bytes,
            "total_bytes": self.total_bytes,
        }


def check_fits(budget: MemoryBudget, free_bytes: int, what: str, option_hint: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``budget`` exceeds ``free_bytes``, naming ``option_hint``."""
    if budget.total_bytes > free_bytes:
        gib = 2**30
        raise MemoryBudgetError(
            f"{what} needs {budget.total_bytes / gib:.2f} GiB (weights {budget.weights_bytes / gib:.2f}, "
            f"KV cache {budget.kv_cache_bytes / gib:.2f}, largest activation "
            f"{budget.largest_activation_bytes / gib:.2f}, staging {budget.staging_bytes / gib:.2f}) "
            f"but the device has {free_bytes / gib:.2f} GiB free: "
            f"lower {option_hint}"
        )


def device_free_bytes(device: str) -> int | None:
    """Free memory of a CUDA device (None for CPU and other devices: no check)."""
    if not device.startswith("cuda"):
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)
