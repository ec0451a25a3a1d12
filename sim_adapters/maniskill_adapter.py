"""ManiSkill3 (SAPIEN): table-top tasks such as ``PickCube-v1`` with ``pd_ee_delta_pose``.

Install (its own environment: it pulls torch and SAPIEN; ``.ci/sim_envs.sh maniskill`` makes
one): ``pip install torch==2.13.0 mani-skill==3.0.1 sapien==3.0.3``. CPU rendering needs a Vulkan
driver: Mesa's lavapipe 25.x from bookworm-backports (``mesa-vulkan-drivers``); Debian 12's
22.3.6 fails with ``Failed to find a supported physical device "cpu"``. On a GPU machine the
NVIDIA driver's Vulkan ICD is enough.

- Actions: normalised ``pd_ee_delta_pose`` — +-0.1 m and +-0.1 rad per unit (axis-angle), the
  gripper +1 open / -1 close, the rotation's sign flipped (measured inverted on every axis:
  :func:`action_mapping.bridge_to_maniskill`, ``tests/sim_adapters/test_maniskill.py``).
- Horizon: 100 control steps by default (PickCube's own 50-step limit is too tight for a
  careful expert: seed 0 needs 57); the environment's time limit is set to match.
- Observations: every sensor camera can be sent (``cameras``; default ``base_camera``);
  ``proprio`` carries the privileged layout (TCP, cube and goal) for the ``expert-maniskill`` policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_maniskill
from sim_adapters.interface import ActInputs, AdapterSettings, missing
from vtla_contracts.privileged_state import PrivilegedState

CONTROL_MODE = "pd_ee_delta_pose"
CUBE_WIDTH_M = 0.04  # PickCube-v1: 2 cm half-size
DEFAULT_HORIZON = 100
DEFAULT_CAMERAS = ("base_camera",)
INSTRUCTIONS = {"PickCube-v1": "pick up the red cube and move it to the green goal"}
INSTALL = "torch==2.13.0 mani-skill==3.0.1 sapien==3.0.3"


def _numpy(value: Any) -> np.ndarray:
    """ManiSkill returns batched torch tensors; take the first env's values as numpy."""
    if hasattr(value, "cpu"):
        value = value.cpu().numpy()
    arr = np.asarray(value)
    return arr[0] if arr.ndim > 1 else arr


class ManiSkillAdapter:
    name = "maniskill"

    def __init__(self, settings: AdapterSettings) -> None:
        try:
            import gymnasium as gym
            import mani_skill.envs  # noqa: F401  (registers the environments)
        except ImportError as exc:
            raise missing("ManiSkill3", INSTALL, "mesa-vulkan-drivers/bookworm-backports libvulkan1",
                          "CPU rendering needs Mesa's lavapipe 25.x, newer than Debian 12's") from exc
        height, width = settings.image_size
        self.max_steps = settings.max_steps or DEFAULT_HORIZON
        self.env: Any = gym.make(
            settings.task, obs_mode="rgb", control_mode=CONTROL_MODE, render_mode="rgb_array",
            sensor_configs={"width": width, "height": height}, max_episode_steps=self.max_steps,
        )
        self.control_hz = float(getattr(self.env.unwrapped, "control_freq", 20))
        known = tuple(getattr(self.env.unwrapped, "_sensors", {}) or DEFAULT_CAMERAS)
        self.cameras = settings.camera_names(DEFAULT_CAMERAS, known)
        self.camera = self.cameras[0]
        self.default_instruction = INSTRUCTIONS.get(settings.task, f"solve {settings.task}")
        self._obs: Any = None
        self._info: dict[str, Any] = {}
        self._steps = 0
        self._terminated = False

    def reset(self, seed: int | None = None) -> None:
        self._obs, self._info = self.env.reset(seed=seed)
        self._steps, self._terminated = 0, False

    def apply(self, action: np.ndarray) -> None:
        obs, _, terminated, truncated, info = self.env.step(bridge_to_maniskill(action).astype(np.float32))
        self._obs, self._info = obs, info
        self._terminated = bool(_numpy(terminated).any() or _numpy(truncated).any())
        self._steps += 1

    def success(self) -> bool:
        return bool(_numpy(self._info.get("success", False)).any())

    def done(self) -> bool:
        return self._terminated or self._steps >= self.max_steps

    def close(self) -> None:
        self.env.close()

    def _image(self, camera: str) -> np.ndarray:
        return np.ascontiguousarray(_numpy(self._obs["sensor_data"][camera]["rgb"]).astype(np.uint8))

    def render(self) -> np.ndarray:
        return self._image(self.camera)

    def privileged_state(self) -> PrivilegedState:
        env = self.env.unwrapped
        tcp, cube, goal = env.agent.tcp.pose, env.cube.pose, env.goal_site.pose
        fingers = _numpy(env.agent.robot.get_qpos())[-2:]
        wxyz_tcp, wxyz_cube = _numpy(tcp.q), _numpy(cube.q)
        return PrivilegedState(
            eef_pos=_numpy(tcp.p),
            eef_quat=np.roll(wxyz_tcp, -1),
            gripper_width=float(fingers.sum()),
            object_pos=_numpy(cube.p),
            object_quat=np.roll(wxyz_cube, -1),
            object_width=CUBE_WIDTH_M,
            target_pos=_numpy(goal.p),
        )

    def observe(self) -> ActInputs:
        images = {camera: self._image(camera) for camera in self.cameras}
        return ActInputs(images=images, proprio=self.privileged_state().pack())
