"""LIBERO (robosuite-based benchmark): ``--task SUITE/INDEX``, e.g. ``libero_spatial/0``.

Install: ``pip install robosuite==1.4.1`` plus LIBERO from source
(``git clone https://github.com/Lifelong-Robot-Learning/LIBERO && pip install -e LIBERO``) and its
scene assets and BDDL files on local disk (``~/.libero/config.yaml`` points at them). LIBERO
pins robosuite 1.4, so it lives in its own environment, apart from the robosuite 1.5 adapter.

- Actions: LIBERO uses robosuite's OSC_POSE (delta, +-0.05 m / +-0.5 rad per unit, gripper -1
  open / +1 close): the same explicit map as robosuite (:func:`action_mapping.bridge_to_robosuite`).
- Images: LIBERO's agent-view frames are upside down and mirrored; rotated by 180 degrees here,
  as the LIBERO policies expect. ``proprio`` is the robot state (eef position (3), axis-angle (3),
  finger joints (2)), as in openpi's LIBERO example: LIBERO has no privileged layout for experts.
Not exercised in this project's CI (LIBERO's assets are not available here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_robosuite, quat_to_axis_angle
from sim_adapters.interface import (
    ActInputs,
    AdapterSettings,
    SimUnavailable,
    UnknownTask,
    configure_gl_backend,
    missing,
)

CONTROL_HZ = 20.0
SETTLE_STEPS = 10  # LIBERO objects fall into place after reset; wait with a no-op (gripper open)
NOOP = np.array([0, 0, 0, 0, 0, 0, -1.0])


class LiberoAdapter:
    name = "libero"
    control_hz = CONTROL_HZ

    def __init__(self, settings: AdapterSettings) -> None:
        suite_name, _, index_text = settings.task.partition("/")
        if not index_text.isdigit():
            raise UnknownTask(f"libero task {settings.task!r}: expected SUITE/INDEX, e.g. libero_spatial/0")
        configure_gl_backend()
        try:
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv
        except ImportError as exc:
            raise missing("LIBERO", "robosuite==1.4.1 -e LIBERO (git clone Lifelong-Robot-Learning/LIBERO)",
                          "libosmesa6 libegl1", "and its scene assets on local disk") from exc
        suites = benchmark.get_benchmark_dict()
        if suite_name not in suites:
            raise UnknownTask(f"libero suite {suite_name!r}; known: {sorted(suites)}")
        suite = suites[suite_name]()
        task = suite.get_task(int(index_text))
        bddl = f"{get_libero_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
        height, width = settings.image_size
        try:
            self.env: Any = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=height, camera_widths=width)
        except FileNotFoundError as exc:
            raise SimUnavailable(f"LIBERO scene assets missing ({exc}); download them (see docs/sims.md)") from exc
        self._init_states = suite.get_task_init_states(int(index_text))
        self.default_instruction = str(task.language)
        self.max_steps = settings.max_steps or 300
        self.camera = settings.camera or "agentview"
        self._obs: dict[str, Any] = {}
        self._done = False
        self._steps = 0

    def reset(self, seed: int | None = None) -> None:
        self.env.reset()
        index = (seed or 0) % len(self._init_states)
        self._obs = self.env.set_init_state(self._init_states[index])
        for _ in range(SETTLE_STEPS):
            self._obs, _, _, _ = self.env.step(NOOP)
        self._done, self._steps = False, 0

    def apply(self, action: np.ndarray) -> None:
        self._obs, _, done, _ = self.env.step(bridge_to_robosuite(action))
        self._done = bool(done)
        self._steps += 1

    def success(self) -> bool:
        return bool(self.env.check_success())

    def done(self) -> bool:
        return self._done or self._steps >= self.max_steps

    def close(self) -> None:
        self.env.close()

    def render(self) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self._obs[f"{self.camera}_image"], dtype=np.uint8)[::-1, ::-1])

    def observe(self) -> ActInputs:
        o = self._obs
        quat = np.asarray(o["robot0_eef_quat"], dtype=np.float64)  # xyzw
        proprio = np.concatenate([o["robot0_eef_pos"], quat_to_axis_angle(quat), o["robot0_gripper_qpos"]])
        return ActInputs(images={self.camera: self.render()}, proprio=proprio.astype(np.float32))
