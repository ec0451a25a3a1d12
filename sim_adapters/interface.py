"""The small interface every simulator adapter implements, and the settings they share.

An adapter owns one simulator instance and speaks the bridge's units: it turns the simulator's
observation into the ``act`` arguments (:class:`ActInputs`) and applies a bridge action
(7,) — metres, radians, gripper 0 open … 1 closed — through an explicit mapping
(:mod:`sim_adapters.action_mapping`). The runner (:mod:`sim_adapters.runner`) drives any adapter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class SimUnavailable(RuntimeError):
    """The simulator (or its assets / renderer) is not installed; the message says what to install."""


class UnknownTask(ValueError):
    pass


class UnknownCamera(ValueError):
    pass


@dataclass(frozen=True)
class AdapterSettings:
    """What the runner asks of an adapter (every adapter accepts these)."""

    task: str
    image_size: tuple[int, int] = (128, 128)  # (height, width) of the camera sent to the bridge
    camera: str = ""  # empty -> the adapter's default camera
    cameras: tuple[str, ...] = ()  # several cameras, sent as named images; empty -> (camera,) or the default
    max_steps: int = 0  # 0 -> the adapter's default horizon for the task
    fast_render: bool = True  # shadows, reflections and MSAA off (about 3x faster on CPU)

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h <= 0 or w <= 0:
            raise ValueError(f"image_size: expected positive (height, width), got {self.image_size}")
        if self.max_steps < 0:
            raise ValueError("max_steps: must be >= 0")
        if len(set(self.cameras)) != len(self.cameras) or any(not c for c in self.cameras):
            raise ValueError(f"cameras: expected distinct non-empty names, got {self.cameras}")

    def camera_names(self, default: tuple[str, ...], known: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The cameras to render: ``cameras``, else ``(camera,)``, else the adapter's ``default``.

        ``known`` (when given) is every camera the simulator has; "all" selects all of them.
        """
        names = self.cameras or ((self.camera,) if self.camera else default)
        if names == ("all",) and known:
            return known
        unknown = [n for n in names if known and n not in known]
        if unknown:
            raise UnknownCamera(f"camera(s) {unknown}: this simulator has {list(known)}")
        return names


@dataclass(frozen=True)
class ActInputs:
    """One control step's ``act`` arguments, in the protocol's terms."""

    images: Mapping[str, np.ndarray]  # camera name -> (H, W, 3) uint8 RGB, top row first
    proprio: np.ndarray | None = None  # (P,) float32, see vtla_contracts.privileged_state
    tactile_image: np.ndarray | None = None  # (h, w, 3) float32 or uint8
    force_torque: np.ndarray | None = None  # (6,) float32: force (N) then torque (N m)

    def tactile(self) -> dict[str, np.ndarray] | None:
        out: dict[str, np.ndarray] = {}
        if self.tactile_image is not None:
            out["image"] = self.tactile_image
        if self.force_torque is not None:
            out["force_torque"] = np.asarray(self.force_torque, dtype=np.float32)
        return out or None


class SimAdapter(Protocol):
    """One simulator instance driven at a fixed control rate."""

    name: str  # "robosuite", "touch", "fetch", ...
    control_hz: float  # the simulator's control frequency
    max_steps: int  # episode horizon in control steps
    default_instruction: str

    def reset(self, seed: int | None = None) -> None: ...

    def observe(self) -> ActInputs: ...

    def apply(self, action: np.ndarray) -> None:
        """Advance one control step with a bridge action (7,) in physical units."""
        ...

    def success(self) -> bool: ...

    def done(self) -> bool:
        """The episode cannot continue (horizon reached, or the simulator says it terminated)."""
        ...

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 frame for the video, top row first."""
        ...

    def close(self) -> None: ...


def configure_gl_backend() -> str:
    """Pick MuJoCo's offscreen GL backend before mujoco is imported; returns the choice.

    Respects MUJOCO_GL when set. Otherwise EGL where an NVIDIA device exists, OSMesa on CPU-only
    machines (both work through Mesa's llvmpipe on CPU; OSMesa tears down without EGL's noise).
    """
    backend = os.environ.get("MUJOCO_GL", "")
    if not backend:
        backend = "egl" if Path("/dev/nvidia0").exists() else "osmesa"
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def missing(sim: str, pip: str, apt: str = "", extra: str = "") -> SimUnavailable:
    """A SimUnavailable that names exactly what to install."""
    parts = [f"{sim} is not available: pip install {pip}"]
    if apt:
        parts.append(f"apt-get install -y {apt}")
    if extra:
        parts.append(extra)
    return SimUnavailable("; ".join(parts))


def flip_vertical(image: np.ndarray) -> np.ndarray:
    """OpenGL renders bottom row first; the bridge wants top row first."""
    return np.ascontiguousarray(image[::-1])
