"""Checks that run INSIDE a simulator's own venv (``python -m tests.sim_adapters.sim_probe CHECK``).

Each prints one JSON line of measurements; the tests in the main environment assert on them
(:func:`tests.sim_adapters.venvs.probe`). They step the real simulator: no fakes.

- ``axes SIM TASK``: the end effector's motion (and, where the simulator takes rotations, its
  rotation vector) after a few steps of each bridge axis, and the finger width after closing.
- ``cameras SIM TASK CAM1,CAM2``: shape, dtype and mean of every requested camera's image.
- ``timing SIM TASK SIZE [CAMERAS]``: mean ms of one ``apply`` + ``observe`` (step + render).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from sim_adapters.action_mapping import quat_to_axis_angle
from sim_adapters.interface import AdapterSettings
from sim_adapters.simulators import make_adapter

AXIS_STEPS = 6


def _rel_rotvec(q0_xyzw: np.ndarray, q1_xyzw: np.ndarray) -> np.ndarray:
    """The rotation vector of q1 * q0^-1 (fixed/base-frame rotation from q0 to q1)."""
    x0, y0, z0, w0 = q0_xyzw
    inv = np.array([-x0, -y0, -z0, w0])
    x1, y1, z1, w1 = q1_xyzw
    x2, y2, z2, w2 = inv
    q = np.array([
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
    ])
    return quat_to_axis_angle(q)


def axes(sim: str, task: str) -> dict[str, Any]:
    adapter: Any = make_adapter(sim, AdapterSettings(task=task, image_size=(32, 32)))
    out: dict[str, Any] = {}
    try:
        for i, name in enumerate(("x", "y", "z", "roll", "pitch", "yaw")):
            adapter.reset(seed=0)
            before = adapter.privileged_state()
            action = np.zeros(7, dtype=np.float32)
            action[i] = 0.01 if i < 3 else 0.05
            for _ in range(AXIS_STEPS):
                adapter.apply(action)
            after = adapter.privileged_state()
            out[name] = {"dpos_m": (after.eef_pos - before.eef_pos).tolist(),
                         "drot_rad": _rel_rotvec(before.eef_quat, after.eef_quat).tolist()}
        adapter.reset(seed=0)
        open_width = adapter.privileged_state().gripper_width
        for _ in range(10):
            adapter.apply(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
        out["gripper"] = {"open_m": open_width, "closed_m": adapter.privileged_state().gripper_width}
    finally:
        adapter.close()
    return out


def cameras(sim: str, task: str, names: str) -> dict[str, Any]:
    settings = AdapterSettings(task=task, image_size=(48, 64), cameras=tuple(names.split(",")))
    adapter: Any = make_adapter(sim, settings)
    try:
        adapter.reset(seed=0)
        inputs = adapter.observe()
        return {
            "images": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "mean": float(v.mean()),
                           "top_mean": float(v[: v.shape[0] // 4].mean()),
                           "bottom_mean": float(v[-v.shape[0] // 4:].mean())}
                       for k, v in inputs.images.items()},
            "instruction": adapter.default_instruction,
            "proprio_dim": None if inputs.proprio is None else int(inputs.proprio.size),
        }
    finally:
        adapter.close()


def timing(sim: str, task: str, size: str, names: str = "") -> dict[str, Any]:
    settings = AdapterSettings(task=task, image_size=(int(size), int(size)),
                               cameras=tuple(n for n in names.split(",") if n))
    adapter: Any = make_adapter(sim, settings)
    steps = 20
    try:
        adapter.reset(seed=0)
        adapter.observe()  # first render builds the context
        start = time.perf_counter()
        for _ in range(steps):
            adapter.apply(np.zeros(7, dtype=np.float32))
            inputs = adapter.observe()
        total_ms = (time.perf_counter() - start) * 1000 / steps
        return {"step_render_ms": total_ms, "cameras": sorted(inputs.images), "size": int(size)}
    finally:
        adapter.close()


CHECKS = {"axes": axes, "cameras": cameras, "timing": timing}

if __name__ == "__main__":
    check, *rest = sys.argv[1:]
    print(json.dumps(CHECKS[check](*rest)))
