"""robosuite 1.5.x: Lift, Stack and PickPlaceCan with the Panda and the OSC_POSE controller.

Install: ``pip install robosuite==1.5.2 mujoco==3.3.7`` (MuJoCo 4 breaks robosuite) and, for
offscreen rendering on CPU, ``apt-get install -y libosmesa6 libegl1 libgl1``.

- Actions: the bridge's physical delta (metres, radians, gripper 0 open … 1 closed) is mapped
  explicitly to the normalised OSC_POSE command (:func:`action_mapping.bridge_to_robosuite`).
  The OSC's deltas are in the robot base frame, so every position in ``proprio`` is too.
- Images: robosuite's offscreen frames are bottom row first (OpenGL); they are flipped.
- Speed: shadows, reflections and MSAA are switched off in the model XML before the render
  context is created (about 3x faster on CPU).
- Tactile: the end-effector force/torque sensor (6,) is sent as ``force_torque``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_adapters.action_mapping import bridge_to_robosuite
from sim_adapters.interface import (
    ActInputs,
    AdapterSettings,
    UnknownTask,
    configure_gl_backend,
    flip_vertical,
    missing,
)
from vtla_contracts.privileged_state import PrivilegedState

logger = logging.getLogger(__name__)

CONTROL_HZ = 20.0
LIFT_TARGET_HEIGHT_M = 0.12  # above the table: the expert lifts the cube this high (success at 0.04)
STACK_CLEARANCE_M = 0.008  # release cube A this far above resting on cube B
BIN_RELEASE_HEIGHT_M = 0.10  # release the can this far above the bin floor


@dataclass(frozen=True)
class TaskInfo:
    env_name: str
    horizon: int
    instruction: str


TASKS: dict[str, TaskInfo] = {
    "Lift": TaskInfo("Lift", 150, "lift the red cube"),
    "Stack": TaskInfo("Stack", 250, "stack the red cube on the green cube"),
    "PickPlaceCan": TaskInfo("PickPlaceCan", 300, "put the can into its bin"),
}
TASK_ALIASES = {"PickPlace": "PickPlaceCan", "lift": "Lift", "stack": "Stack", "pickplace": "PickPlaceCan"}


def fast_render_xml(xml: str) -> str:
    """Shadows, reflections and multisampling off: the costly parts of CPU (llvmpipe) rendering."""
    root = ET.fromstring(xml)
    visual = root.find("visual")
    if visual is None:
        visual = ET.SubElement(root, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("shadowsize", "0")
    quality.set("offsamples", "0")
    for light in root.iter("light"):
        light.set("castshadow", "false")
    for material in root.iter("material"):
        if "reflectance" in material.attrib:
            material.set("reflectance", "0")
    return ET.tostring(root, encoding="unicode")


class RobosuiteAdapter:
    name = "robosuite"
    control_hz = CONTROL_HZ

    def __init__(self, settings: AdapterSettings) -> None:
        task = TASK_ALIASES.get(settings.task, settings.task)
        if task not in TASKS:
            raise UnknownTask(f"robosuite task {settings.task!r}; known: {sorted(TASKS)} (alias PickPlace)")
        self.task = TASKS[task]
        self.settings = settings
        self.camera = settings.camera or "agentview"
        self.max_steps = settings.max_steps or self.task.horizon
        self.default_instruction = self.task.instruction
        configure_gl_backend()
        try:
            import robosuite
            from robosuite.controllers import load_composite_controller_config
        except ImportError as exc:
            raise missing("robosuite", "robosuite==1.5.2 mujoco==3.3.7", "libosmesa6 libegl1 libgl1") from exc
        for name in ("robosuite", "robosuite_logs"):
            logging.getLogger(name).setLevel(logging.ERROR)
        controller = load_composite_controller_config(controller="BASIC", robot="Panda")
        arm = controller["body_parts"]["right"]
        if arm["type"] != "OSC_POSE" or arm["input_type"] != "delta":
            raise RuntimeError(f"robosuite BASIC Panda controller is not delta OSC_POSE: {arm['type']}")
        height, width = settings.image_size
        self.env: Any = robosuite.make(
            self.task.env_name,
            robots="Panda",
            controller_configs=controller,
            has_renderer=False,
            has_offscreen_renderer=True,
            use_camera_obs=True,
            use_object_obs=True,
            camera_names=self.camera,
            camera_heights=height,
            camera_widths=width,
            control_freq=int(CONTROL_HZ),
            horizon=self.max_steps,
            ignore_done=True,
            hard_reset=True,
        )
        if settings.fast_render:
            self.env.set_xml_processor(fast_render_xml)
        # one hard reset rebuilds the sim and its render context through the XML processor; later
        # resets only re-sample the scene (seconds faster per episode)
        self.env.reset()
        self.env.hard_reset = False
        self._obs: dict[str, Any] = {}
        self._steps = 0

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            np.random.seed(seed)  # robosuite's placement samplers draw from numpy's global RNG
        self._obs = self.env.reset()
        self._steps = 0

    def apply(self, action: np.ndarray) -> None:
        native = bridge_to_robosuite(action)
        self._obs, _, _, _ = self.env.step(native)
        self._steps += 1

    def success(self) -> bool:
        return bool(self.env._check_success())

    def done(self) -> bool:
        return self._steps >= self.max_steps

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------ observation

    def _image(self) -> np.ndarray:
        return flip_vertical(np.asarray(self._obs[f"{self.camera}_image"], dtype=np.uint8))

    def render(self) -> np.ndarray:
        return self._image()

    def observe(self) -> ActInputs:
        robot = self.env.robots[0]
        force = np.asarray(robot.ee_force["right"], dtype=np.float32)
        torque = np.asarray(robot.ee_torque["right"], dtype=np.float32)
        return ActInputs(
            images={self.camera: self._image()},
            proprio=self.privileged_state().pack(),
            force_torque=np.concatenate([force, torque]),
        )

    def _to_base(self, world_pos: np.ndarray) -> np.ndarray:
        robot = self.env.robots[0]
        sim = self.env.sim
        base_pos = sim.data.get_body_xpos(robot.robot_model.root_body)
        base_rot = sim.data.get_body_xmat(robot.robot_model.root_body).reshape(3, 3)
        return np.asarray(base_rot.T @ (np.asarray(world_pos) - base_pos))

    def _body_pos(self, obj: Any) -> np.ndarray:
        sim = self.env.sim
        return np.array(sim.data.body_xpos[sim.model.body_name2id(obj.root_body)])

    def _body_quat_xyzw(self, obj: Any) -> np.ndarray:
        sim = self.env.sim
        wxyz = np.array(sim.data.body_xquat[sim.model.body_name2id(obj.root_body)])
        return np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])

    def _task_object(self) -> tuple[Any, float, np.ndarray]:
        """-> (object to grasp, its width between the fingers (m), target centre in the world frame)."""
        env = self.env
        name = self.task.env_name
        table_z = float(env.model.mujoco_arena.table_offset[2]) if name != "PickPlaceCan" else 0.0
        if name == "Lift":
            obj = env.cube
            pos = self._body_pos(obj)
            return obj, 2.0 * float(obj.size[0]), np.array([pos[0], pos[1], table_z + LIFT_TARGET_HEIGHT_M])
        if name == "Stack":
            obj, base = env.cubeA, env.cubeB
            base_pos = self._body_pos(base)
            lift_z = float(base.size[2] + obj.size[2]) + STACK_CLEARANCE_M
            return obj, 2.0 * float(obj.size[0]), base_pos + np.array([0.0, 0.0, lift_z])
        obj = env.objects[env.object_id]
        target = np.array(env.target_bin_placements[env.object_id], dtype=np.float64)
        target[2] += BIN_RELEASE_HEIGHT_M
        return obj, 2.0 * float(obj.horizontal_radius), target

    def privileged_state(self) -> PrivilegedState:
        obs = self._obs
        obj, width, target_world = self._task_object()
        qpos = np.asarray(obs["robot0_gripper_qpos"])
        eef_quat = np.asarray(obs["robot0_eef_quat"])  # xyzw (robosuite convention)
        return PrivilegedState(
            eef_pos=self._to_base(obs["robot0_eef_pos"]),
            eef_quat=eef_quat,
            gripper_width=float(qpos[0] - qpos[1]),
            object_pos=self._to_base(self._body_pos(obj)),
            object_quat=self._body_quat_xyzw(obj),
            object_width=width,
            target_pos=self._to_base(target_world),
        )
