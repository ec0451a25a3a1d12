"""The project's own MuJoCo scene: a gantry gripper with touch sensors on its finger pads.

Install: ``pip install mujoco==3.3.7`` (+ ``apt-get install -y libosmesa6`` or ``libegl1`` for
offscreen rendering). The scene (``assets/touch_gripper.xml``) is a parallel gripper on x/y/z
slides with a 4x4 grid of ``touch`` sensors on each pad and a force/torque sensor at the wrist,
and a 4 cm box to lift (task ``lift``). Observations carry a real tactile image
(:mod:`vtla_contracts.tactile_layout`) and the wrist force/torque (6,).

Actions: ``[dx, dy, dz]`` metres move the gripper's position targets; rotations are ignored (the
gantry does not rotate); the gripper command 0 open … 1 closed sets both fingers' targets.
Positions in ``proprio`` are in the world frame, which is the gantry's base frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sim_adapters.action_mapping import ACTION_DIM
from sim_adapters.interface import ActInputs, AdapterSettings, UnknownTask, configure_gl_backend, missing
from vtla_contracts.privileged_state import PrivilegedState
from vtla_contracts.tactile_layout import TACTILE_COLS, TACTILE_ROWS, tactile_image, touch_sensor_name

logger = logging.getLogger(__name__)

SCENE_XML = Path(__file__).parent / "assets" / "touch_gripper.xml"
CONTROL_HZ = 20.0
OPEN_WIDTH_M = 0.08  # pad-to-pad distance with both fingers at 0
FINGER_TRAVEL_M = 0.035  # per finger, fully closed
BOX_HALF_M = 0.02
BOX_SPAWN_HALF_RANGE_M = 0.08  # the box starts uniformly in +-this around the origin
LIFT_TARGET_Z_M = 0.12
SUCCESS_Z_M = 0.10
TASKS = {"lift": ("lift the red box", 120)}


class TouchAdapter:
    name = "touch"
    control_hz = CONTROL_HZ

    def __init__(self, settings: AdapterSettings) -> None:
        if settings.task not in TASKS:
            raise UnknownTask(f"touch task {settings.task!r}; known: {sorted(TASKS)}")
        self.default_instruction, horizon = TASKS[settings.task]
        self.max_steps = settings.max_steps or horizon
        configure_gl_backend()
        try:
            import mujoco
        except ImportError as exc:
            raise missing("the MuJoCo touch scene", "mujoco==3.3.7", "libosmesa6 libegl1") from exc
        self._mj: Any = mujoco
        self.model: Any = mujoco.MjModel.from_xml_path(str(SCENE_XML))
        self.data: Any = mujoco.MjData(self.model)
        self._substeps = max(1, round(1.0 / (CONTROL_HZ * self.model.opt.timestep)))
        height, width = settings.image_size
        self.camera = settings.camera or "front"
        self._renderer: Any = mujoco.Renderer(self.model, height, width)
        self._ids = self._lookup_ids()
        self._targets = np.zeros(3)  # gantry slide targets (m)
        self._steps = 0

    def _lookup_ids(self) -> dict[str, Any]:
        mj, m = self._mj, self.model

        def sensor_adr(name: str) -> int:
            return int(m.sensor_adr[mj.mj_name2id(m, mj.mjtObj.mjOBJ_SENSOR, name)])

        touch = {
            side: [sensor_adr(touch_sensor_name(side, r, c)) for r in range(TACTILE_ROWS) for c in range(TACTILE_COLS)]
            for side in ("left", "right")
        }
        joint_qpos = {
            name: int(m.jnt_qposadr[mj.mj_name2id(m, mj.mjtObj.mjOBJ_JOINT, name)])
            for name in ("slide_x", "slide_y", "slide_z", "left_slide", "right_slide", "box")
        }
        return {
            "touch": touch,
            "force": sensor_adr("wrist_force"),
            "torque": sensor_adr("wrist_torque"),
            "qpos": joint_qpos,
            "grip_site": mj.mj_name2id(m, mj.mjtObj.mjOBJ_SITE, "grip"),
            "box_body": mj.mj_name2id(m, mj.mjtObj.mjOBJ_BODY, "box"),
        }

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        self._mj.mj_resetData(self.model, self.data)
        box_xy = rng.uniform(-BOX_SPAWN_HALF_RANGE_M, BOX_SPAWN_HALF_RANGE_M, size=2)
        adr = self._ids["qpos"]["box"]
        self.data.qpos[adr : adr + 7] = [box_xy[0], box_xy[1], BOX_HALF_M, 1.0, 0.0, 0.0, 0.0]
        self._targets = np.zeros(3)
        self.data.ctrl[:] = 0.0
        self._mj.mj_forward(self.model, self.data)
        self._steps = 0

    def apply(self, action: np.ndarray) -> None:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise ValueError(f"touch: expected a finite ({ACTION_DIM},) action, got {a!r}")
        ranges = self.model.actuator_ctrlrange
        self._targets = np.clip(self._targets + a[:3], ranges[:3, 0], ranges[:3, 1])
        finger = float(np.clip(a[6], 0.0, 1.0)) * FINGER_TRAVEL_M
        self.data.ctrl[:3] = self._targets
        self.data.ctrl[3:5] = finger
        self._mj.mj_step(self.model, self.data, nstep=self._substeps)
        self._steps += 1

    def box_height_m(self) -> float:
        return float(self.data.xpos[self._ids["box_body"]][2])

    def success(self) -> bool:
        return self.box_height_m() > SUCCESS_Z_M

    def done(self) -> bool:
        return self._steps >= self.max_steps

    def close(self) -> None:
        self._renderer.close()

    # ------------------------------------------------------------------ observation

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera=self.camera)
        return np.asarray(self._renderer.render(), dtype=np.uint8)  # mujoco.Renderer: top row first

    def tactile(self) -> np.ndarray:
        sensordata = self.data.sensordata
        left = sensordata[self._ids["touch"]["left"]]
        right = sensordata[self._ids["touch"]["right"]]
        return tactile_image(left, right)

    def force_torque(self) -> np.ndarray:
        f, t = self._ids["force"], self._ids["torque"]
        sd = self.data.sensordata
        return np.concatenate([sd[f : f + 3], sd[t : t + 3]]).astype(np.float32)

    def privileged_state(self) -> PrivilegedState:
        q = self._ids["qpos"]
        width = OPEN_WIDTH_M - float(self.data.qpos[q["left_slide"]] + self.data.qpos[q["right_slide"]])
        box = self._ids["box_body"]
        box_pos = np.array(self.data.xpos[box])
        wxyz = np.array(self.data.xquat[box])
        return PrivilegedState(
            eef_pos=np.array(self.data.site_xpos[self._ids["grip_site"]]),
            eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),
            gripper_width=width,
            object_pos=box_pos,
            object_quat=np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]]),
            object_width=2 * BOX_HALF_M,
            target_pos=np.array([box_pos[0], box_pos[1], LIFT_TARGET_Z_M]),
        )

    def observe(self) -> ActInputs:
        return ActInputs(
            images={self.camera: self.render()},
            proprio=self.privileged_state().pack(),
            tactile_image=self.tactile(),
            force_torque=self.force_torque(),
        )
