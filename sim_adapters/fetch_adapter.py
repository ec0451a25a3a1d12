"""gymnasium-robotics Fetch (MuJoCo): ``PickAndPlace`` with the 4-D mocap action.

Install: ``pip install gymnasium-robotics==1.4.2 mujoco==3.3.7`` (+ ``libosmesa6`` or ``libegl1``
for offscreen rendering on CPU).

- Actions: Fetch takes ``[dx, dy, dz, gripper]`` in [-1, 1]: position x 0.05 m per step, the
  gripper +1 open / -1 close (:func:`action_mapping.bridge_to_fetch`). The end effector's
  orientation is fixed by the environment, so the bridge's rotation is ignored.
- Positions (world frame = the mocap's frame) go in ``proprio``; the target is the episode goal.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_fetch, rpy_to_quat
from sim_adapters.interface import ActInputs, AdapterSettings, UnknownTask, configure_gl_backend, missing
from vtla_contracts.privileged_state import PrivilegedState

logger = logging.getLogger(__name__)

TASKS = {"PickAndPlace": ("FetchPickAndPlace-v4", "put the black block at the red target", 50)}
TASK_ALIASES = {"pickandplace": "PickAndPlace", "pick_and_place": "PickAndPlace"}
OBJECT_WIDTH_M = 0.05  # the block is a 5 cm cube


class FetchAdapter:
    name = "fetch"

    def __init__(self, settings: AdapterSettings) -> None:
        task = TASK_ALIASES.get(settings.task.lower(), settings.task)
        if task not in TASKS:
            raise UnknownTask(f"fetch task {settings.task!r}; known: {sorted(TASKS)}")
        env_id, self.default_instruction, horizon = TASKS[task]
        self.max_steps = settings.max_steps or horizon
        configure_gl_backend()
        try:
            import gymnasium as gym
            import gymnasium_robotics
        except ImportError as exc:
            raise missing("gymnasium-robotics Fetch", "gymnasium-robotics==1.4.2 mujoco==3.3.7",
                          "libosmesa6 libegl1") from exc
        gym.register_envs(gymnasium_robotics)
        height, width = settings.image_size
        self.env: Any = gym.make(env_id, render_mode="rgb_array", width=width, height=height,
                                 max_episode_steps=self.max_steps)
        inner: Any = self.env.unwrapped
        self.control_hz = 1.0 / float(inner.dt)
        self.camera = settings.camera or "fetch"  # Fetch renders its one default view
        self._obs: dict[str, Any] = {}
        self._info: dict[str, Any] = {}
        self._terminated = False
        self._steps = 0

    def reset(self, seed: int | None = None) -> None:
        self._obs, self._info = self.env.reset(seed=seed)
        self._terminated = False
        self._steps = 0

    def apply(self, action: np.ndarray) -> None:
        obs, _, terminated, truncated, info = self.env.step(bridge_to_fetch(action).astype(np.float32))
        self._obs, self._info = obs, info
        self._terminated = bool(terminated or truncated)
        self._steps += 1

    def success(self) -> bool:
        return bool(self._info.get("is_success", 0.0))

    def done(self) -> bool:
        return self._terminated or self._steps >= self.max_steps

    def close(self) -> None:
        self.env.close()

    def render(self) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.env.render(), dtype=np.uint8))

    def privileged_state(self) -> PrivilegedState:
        o = np.asarray(self._obs["observation"], dtype=np.float64)
        grip_pos, object_pos, fingers = o[0:3], o[3:6], o[9:11]
        roll, pitch, yaw = o[11:14]
        quat = rpy_to_quat(np.array([roll, pitch, yaw]))
        return PrivilegedState(
            eef_pos=grip_pos,
            eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),
            gripper_width=float(fingers.sum()),
            object_pos=object_pos,
            object_quat=quat,
            object_width=OBJECT_WIDTH_M,
            target_pos=np.asarray(self._obs["desired_goal"], dtype=np.float64),
        )

    def observe(self) -> ActInputs:
        return ActInputs(images={self.camera: self.render()}, proprio=self.privileged_state().pack())




