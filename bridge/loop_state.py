"""What the inference loop publishes for the other threads: its status, the loaded models' facts
and its counters (health reads them, bridge/server_status.py). Written only by the loop thread,
read attribute by attribute by the I/O thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.interfaces import ModelInfo


@dataclass(frozen=True)
class LoadedModel:
    role: str  # "policy" | "vlm"
    info: ModelInfo
    description: dict[str, Any]
    stats: dict[str, Any] | None = None
    skills: tuple[str, ...] = ()
    frame_staging: Callable[[], dict[str, Any]] | None = None  # the policy's staging_stats(), if any


@dataclass
class LoopState:
    """Written only by the loop thread; read (attribute by attribute) by the I/O thread."""

    status: str = "loading"  # loading | ok | degraded | stopping
    detail: str = ""
    device: str = "unknown"
    dtype: str = "unknown"
    cuda_available: bool = False
    gpu_memory_gb: float | None = None
    policy: LoadedModel | None = None
    vlm: LoadedModel | None = None
    generation_active: int = 0  # requests holding a KV slot (admitting or decoding), per iteration
    generation_waiting: int = 0  # generation requests waiting for a slot
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "act_batches": 0,
            "act_requests": 0,
            "admission_units": 0,
            "decode_steps": 0,
            "decode_steps_overlapped": 0,  # decode steps an act batch ran beside (overlap)
            "act_holds": 0,  # times the acts held for a periodic client's act due (anticipation)
            "admissions_deferred": 0,  # admission units put after a decode step: a periodic act was due
            "generation_cancelled": 0,
        }
    )
