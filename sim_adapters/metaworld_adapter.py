"""Meta-World v3 (MuJoCo, Sawyer): ``--task pick-place-v3`` and the other MT1 task names.

Install (in the simulator's own environment; ``.ci/sim_envs.sh metaworld`` makes one):
``pip install mujoco==3.3.7 gymnasium==1.2.2 scipy imageio packaging pyopengl`` then
``pip install --no-deps metaworld==3.1.1`` (it pins ``mujoco==3.3.0``; it runs on 3.3.7).

- Episodes: the MT1 benchmark's 50 fixed task variants (object and goal placements, drawn with
  ``MT1(task, seed=0)``); episode seed ``s`` plays variant ``s % 50``.
- Actions: ``[dx, dy, dz, gripper]`` in [-1, 1], the mocap moving 0.01 m per unit and step, the
  gripper +1 closing (:func:`action_mapping.bridge_to_metaworld`); the hand's orientation is fixed
  by the environment, so the bridge's rotation is ignored.
- Images: every camera of the scene can be sent (``cameras``; default ``corner``). The scene's
  fixed cameras are mounted upside down (their up axis points at the floor): their frames are
  rotated by 180 degrees; cameras that are upright (``behindGripper``, ``topview``) are not.
- Speed: shadows, reflections, multisampling and the skybox off (``fast_render``).
- ``proprio``: the privileged layout in the world frame (= the mocap's frame): the TCP (midpoint
  of the finger sites), finger-pad distance, the task's object and goal (``obs[4:7]``, ``[36:39]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_metaworld
from sim_adapters.interface import ActInputs, AdapterSettings, UnknownTask, configure_gl_backend, missing
from vtla_contracts.privileged_state import PrivilegedState

logger = logging.getLogger(__name__)

BENCHMARK_SEED = 0  # MT1(task, seed=BENCHMARK_SEED) draws the 50 task variants
DEFAULT_CAMERAS = ("corner",)
UPSIDE_DOWN_Z = -0.1  # a camera whose up axis has a world z below this renders upside down


@dataclass(frozen=True)
class MetaWorldTask:
    instruction: str
    object_width_m: float  # the object's extent between the fingers
    horizon: int


TASKS: dict[str, MetaWorldTask] = {
    "pick-place-v3": MetaWorldTask("pick up the puck and place it at the goal", 0.04, 250),
    "push-v3": MetaWorldTask("push the puck to the goal", 0.04, 250),
    "bin-picking-v3": MetaWorldTask("move the puck into the other bin", 0.04, 300),
    "pick-out-of-hole-v3": MetaWorldTask("pick the peg out of the hole", 0.04, 300),
    "reach-v3": MetaWorldTask("reach the goal", 0.04, 150),
}
INSTALL = "mujoco==3.3.7 gymnasium==1.2.2 scipy imageio packaging pyopengl && pip install --no-deps metaworld==3.1.1"


def fast_render_model(model: Any) -> None:
    """Shadows, reflections and multisampling off in a loaded MjModel (before any render context)."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0


class MetaWorldAdapter:
    name = "metaworld"

    def __init__(self, settings: AdapterSettings) -> None:
        configure_gl_backend()
        try:
            import metaworld
            import mujoco
        except ImportError as exc:
            raise missing("Meta-World", INSTALL, "libosmesa6 libegl1") from exc
        self._mujoco = mujoco
        self.benchmark: Any = metaworld.MT1(settings.task, seed=BENCHMARK_SEED) \
            if settings.task in metaworld.ALL_V3_ENVIRONMENTS else None
        if self.benchmark is None:
            raise UnknownTask(f"metaworld task {settings.task!r}; e.g. {sorted(TASKS)} "
                              f"(any of the {len(metaworld.ALL_V3_ENVIRONMENTS)} MT1 names)")
        self.task = settings.task
        info = TASKS.get(settings.task, MetaWorldTask(f"solve {settings.task}", 0.04, 500))
        self.object_width_m = info.object_width_m
        self.default_instruction = info.instruction
        self.env: Any = self.benchmark.train_classes[settings.task]()
        self.max_steps = min(settings.max_steps or info.horizon, int(self.env.max_path_length))
        self.control_hz = 1.0 / float(self.env.dt)
        model = self.env.model
        known = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam))
        self.cameras = settings.camera_names(DEFAULT_CAMERAS, known)
        self.camera = self.cameras[0]
        if settings.fast_render:
            fast_render_model(model)
        height, width = settings.image_size
        self._renderer: Any = mujoco.Renderer(model, height, width)
        if settings.fast_render:
            flags = self._renderer.scene.flags
            for flag in (mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_SHADOW,
                         mujoco.mjtRndFlag.mjRND_REFLECTION):
                flags[flag] = 0
        self._obs: np.ndarray = np.zeros(39)
        self._info: dict[str, Any] = {}
        self._steps = 0
        self._truncated = False

    def reset(self, seed: int | None = None) -> None:
        tasks = self.benchmark.train_tasks
        self.env.set_task(tasks[(seed or 0) % len(tasks)])
        self._obs, self._info = self.env.reset()
        self._steps, self._truncated = 0, False

    def apply(self, action: np.ndarray) -> None:
        obs, _, terminated, truncated, info = self.env.step(bridge_to_metaworld(action).astype(np.float32))
        self._obs, self._info = np.asarray(obs), info
        self._truncated = bool(terminated or truncated)
        self._steps += 1

    def success(self) -> bool:
        return bool(self._info.get("success", 0.0))

    def done(self) -> bool:
        return self._truncated or self._steps >= self.max_steps

    def close(self) -> None:
        self._renderer.close()
        self.env.close()

    # ------------------------------------------------------------------ observation

    def _upside_down(self, camera: str) -> bool:
        cam_id = self._mujoco.mj_name2id(self.env.model, self._mujoco.mjtObj.mjOBJ_CAMERA, camera)
        up_world = np.asarray(self.env.data.cam_xmat[cam_id]).reshape(3, 3)[:, 1]
        return bool(up_world[2] < UPSIDE_DOWN_Z)

    def _image(self, camera: str) -> np.ndarray:
        self._renderer.update_scene(self.env.data, camera=camera)
        frame = np.asarray(self._renderer.render(), dtype=np.uint8)
        return np.ascontiguousarray(frame[::-1, ::-1] if self._upside_down(camera) else frame)

    def images(self) -> dict[str, np.ndarray]:
        return {camera: self._image(camera) for camera in self.cameras}

    def render(self) -> np.ndarray:
        return self._image(self.camera)

    def privileged_state(self) -> PrivilegedState:
        env, obs = self.env, self._obs
        quat_xyzw = np.asarray(obs[7:11], dtype=np.float64)  # scipy order
        pads = np.asarray(env.data.body("rightpad").xpos) - np.asarray(env.data.body("leftpad").xpos)
        return PrivilegedState(
            eef_pos=np.asarray(env.tcp_center, dtype=np.float64),
            eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),  # fixed by the environment
            gripper_width=float(np.linalg.norm(pads)),
            object_pos=np.asarray(obs[4:7], dtype=np.float64),
            object_quat=quat_xyzw if np.linalg.norm(quat_xyzw) > 0 else np.array([0.0, 0.0, 0.0, 1.0]),
            object_width=self.object_width_m,
            target_pos=np.asarray(obs[36:39], dtype=np.float64),
        )

    def observe(self) -> ActInputs:
        return ActInputs(images=self.images(), proprio=self.privileged_state().pack())
