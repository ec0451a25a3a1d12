"""A LIBERO task's goal predicate (from its BDDL) turned into a grasp point and a target.

The ``expert-libero`` policy only knows the privileged layout (:mod:`vtla_contracts.privileged_state`):
"bring the point ``object_pos`` to ``target_pos``". For a goal ``(On akita_black_bowl_1 plate_1)``
or ``(In alphabet_soup_1 basket_1_contain_region)`` this module picks the point to grasp on the
object (its top centre, or a point on the rim of an object wider than the open gripper, such as a
bowl) and where that point must go so that the object ends on / in the target.
Parsing is pure Python (unit-tested without LIBERO); :class:`GoalResolver` reads the live sim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_GRASP_WIDTH_M = 0.07  # wider than this between the fingers (Panda opens 0.08): grasp the rim
RIM_INSET_M = 0.008  # rim grasp point this far inside the object's outer edge
GRASP_DEPTH_M = 0.012  # grasp this far below the object's top (or at half its height, if lower)
RIM_WALL_M = 0.007  # what the fingers read closed on a rim when its wall cannot be measured
RIM_DEPTH_M = 0.02  # pinch a rim this far below its top (the pads reach 4 mm above the hand's site, 8 mm below)
RIM_TOP_NEAR_X_M = 0.02  # a rim's top on the pinched side: its geoms' corners this close to the pinch in x
FINGERS_CLOSED_M = 0.004  # the Panda finger reading closed on nothing (the pads meet): width = gap + this
ON_CLEARANCE_M = 0.015  # release with the object's bottom this far above the target's top
IN_CLEARANCE_M = 0.04  # release this far above a container region's site
SUPPORTED = ("on", "in")


class UnsupportedGoal(ValueError):
    pass


@dataclass(frozen=True)
class Goal:
    predicate: str  # "on" | "in"
    obj: str  # the object to move, e.g. "akita_black_bowl_1"
    target: str  # an object or fixture ("plate_1") or a region site ("basket_1_contain_region")


def parse_goal(goal_state: list[list[str]]) -> Goal:
    """LIBERO's parsed ``goal_state`` (e.g. ``[["on", "bowl_1", "plate_1"]]``) -> the one goal."""
    if len(goal_state) != 1 or len(goal_state[0]) != 3:
        raise UnsupportedGoal(f"goal {goal_state}: the expert handles one (On|In object target) predicate")
    predicate, obj, target = (str(v) for v in goal_state[0])
    if predicate.lower() not in SUPPORTED:
        raise UnsupportedGoal(f"goal predicate {predicate!r}: the expert handles {SUPPORTED}")
    return Goal(predicate.lower(), obj, target)


def parse_goal_text(bddl: str) -> Goal:
    """The ``(:goal (And (Pred a b)))`` clause of a BDDL file's text -> :class:`Goal`."""
    match = re.search(r"\(:goal\s*\(\s*And\s*((?:\([^()]*\)\s*)+)\)\s*\)", bddl, re.IGNORECASE)
    if match is None:
        raise UnsupportedGoal("no (:goal (And ...)) clause in the BDDL text")
    clauses = [c.split() for c in re.findall(r"\(([^()]*)\)", match.group(1))]
    return parse_goal(clauses)


def grasp_point(bbox_min: np.ndarray, bbox_max: np.ndarray, side_y: float) -> tuple[np.ndarray, float]:
    """-> (where to grasp, world frame; width between the fingers), fingers closing along world y.

    An object narrower than the open gripper is grasped at its top centre; a wider one (a bowl,
    a plate) on its rim, on the ``side_y`` (+1 or -1) side, where the fingers pinch the wall.
    """
    centre = (bbox_min + bbox_max) / 2
    extent = bbox_max - bbox_min
    z = bbox_max[2] - min(GRASP_DEPTH_M, extent[2] / 2)
    if min(extent[0], extent[1]) <= MAX_GRASP_WIDTH_M:
        return np.array([centre[0], centre[1], z]), float(extent[1])
    y = centre[1] + np.sign(side_y) * (extent[1] / 2 - RIM_INSET_M)
    return np.array([centre[0], y, z]), RIM_WALL_M


class GoalResolver:
    """Reads the object's and target's poses from a LIBERO (robosuite 1.4) env's sim."""

    def __init__(self, env: Any, goal: Goal) -> None:
        self.env = env
        self.goal = goal
        sim = env.sim
        robot = env.robots[0]
        root = sim.model.body_name2id(robot.robot_model.root_body)
        self._base_pos = np.array(sim.data.body_xpos[root])
        self._base_rot = np.array(sim.data.body_xmat[root]).reshape(3, 3)
        self._width = 0.0
        self._grasp_local = np.zeros(3)  # the grasp point in the object's body frame
        self._grasp_above_bottom = np.zeros(3)  # ... relative to its bottom centre when upright

    def to_base(self, world: np.ndarray) -> np.ndarray:
        return np.asarray(self._base_rot.T @ (np.asarray(world, dtype=np.float64) - self._base_pos))

    def start_episode(self, eef_world: np.ndarray) -> None:
        """Choose the grasp point for the episode, fixed on the object's body (so it follows the
        object when the grasp tilts it): a wide object's rim on the side nearer to the hand."""
        lo, hi = self._bbox(self.goal.obj)
        side_y = 1.0 if float(eef_world[1]) >= float((lo[1] + hi[1]) / 2) else -1.0
        grasp, self._width = grasp_point(lo, hi, side_y)
        if self._width == RIM_WALL_M:
            wall = self._rim_wall(lo, hi, side_y)
            if wall is not None:
                grasp, self._width = wall
        pos, rot = self._object_pose()
        self._grasp_local = rot.T @ (grasp - pos)
        self._grasp_above_bottom = grasp - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])

    def _rim_wall(self, lo: np.ndarray, hi: np.ndarray, side_y: float) -> tuple[np.ndarray, float] | None:
        """Where the fingers pinch a rim on the ``side_y`` side: the middle of the wall,
        ``RIM_DEPTH_M`` below the rim's top on that side, and the finger reading there (the wall's
        thickness + ``FINGERS_CLOSED_M``), found by casting rays at the object's collision geoms.
        A bowl's wall flares (the bounding box's edge is its outer rim at the top, not where the
        fingers close) and a bowl resting on something may tilt (its rim is lower on one side).
        None if a ray misses."""
        cx, cy = float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)
        side = float(np.sign(side_y))
        wall = self._wall_at(cx, cy, side, float(hi[2]) - RIM_DEPTH_M, float(hi[1] - lo[1]))
        if wall is None:
            return None
        # the rim's top on this side (lower than the object's top if it tilts): the highest corner
        # of its collision geoms on that side, near the pinch
        corners = self._corners(self.goal.obj)
        near = corners[(side * (corners[:, 1] - cy) > 0) & (np.abs(corners[:, 0] - cx) < RIM_TOP_NEAR_X_M)]
        if len(near):
            top = float(near[:, 2].max())
            wall = self._wall_at(cx, cy, side, top - RIM_DEPTH_M, float(hi[1] - lo[1])) or wall
        y_mid, thickness, z = wall
        return np.array([cx, y_mid, z]), thickness + FINGERS_CLOSED_M

    def _wall_at(
        self, cx: float, cy: float, side: float, z: float, extent_y: float
    ) -> tuple[float, float, float] | None:
        """-> (y of the wall's middle, its thickness, z) along the line x = cx at height z."""
        outside = np.array([cx, cy + side * (extent_y / 2 + 0.02), z])
        inward = self._ray(outside, np.array([0.0, -side, 0.0]))
        outward = self._ray(np.array([cx, cy, z]), np.array([0.0, side, 0.0]))
        if inward is None or outward is None:
            return None
        y_outer, y_inner = float(outside[1]) - side * inward, cy + side * outward
        return (y_outer + y_inner) / 2, abs(y_outer - y_inner), z

    def _ray(self, start: np.ndarray, direction: np.ndarray) -> float | None:
        """Distance from ``start`` along ``direction`` to the nearest collision geom of the object."""
        import mujoco

        model, data = self.env.sim.model._model, self.env.sim.data._data
        body = self._body_id(self.goal.obj)
        best = None
        for g in range(model.ngeom):
            if not _descends(model, int(model.geom_bodyid[g]), body):
                continue
            if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
                continue
            if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
                dist = mujoco.mj_rayMesh(model, data, g, start, direction)
            else:
                dist = mujoco.mju_rayGeom(data.geom_xpos[g], data.geom_xmat[g], model.geom_size[g], start, direction,
                                          int(model.geom_type[g]))
            if dist >= 0 and (best is None or dist < best):
                best = float(dist)
        return best

    def _object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.env.sim.data._data
        body = self._body_id(self.goal.obj)
        return np.array(data.xpos[body]), np.array(data.xmat[body]).reshape(3, 3)

    def _body_id(self, name: str) -> int:
        env = self.env
        if name in env.objects_dict:
            return int(env.obj_body_id[name])
        if name in getattr(env, "fixtures_dict", {}):
            return int(env.sim.model.body_name2id(env.fixtures_dict[name].root_body))
        raise UnsupportedGoal(f"{name!r} is neither an object nor a fixture of this scene")

    def _bbox(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World-frame box around the collision geoms of a body and its children."""
        pts = self._corners(name)
        return pts.min(axis=0), pts.max(axis=0)

    def _corners(self, name: str) -> np.ndarray:
        """(n, 3) world-frame corners of the boxes around a body's (and its children's) collision
        geoms; the body's position if it has none."""
        model, data = self.env.sim.model._model, self.env.sim.data._data
        body = self._body_id(name)
        bodies = {b for b in range(model.nbody) if _descends(model, b, body)}
        corners = []
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        for g in range(model.ngeom):
            if model.geom_bodyid[g] not in bodies or (model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0):
                continue
            aabb = model.geom_aabb[g]
            rot = data.geom_xmat[g].reshape(3, 3)
            local = aabb[:3] + signs * aabb[3:]
            corners.append(data.geom_xpos[g] + local @ rot.T)
        if not corners:
            return np.array(data.xpos[body]).reshape(1, 3)
        return np.concatenate(corners)

    def object_quat_xyzw(self) -> np.ndarray:
        wxyz = np.array(self.env.sim.data.body_xquat[self._body_id(self.goal.obj)])
        return np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])

    def grasp_and_target(self) -> tuple[np.ndarray, float, np.ndarray]:
        """-> (grasp point, width between the fingers, where the grasp point must go), world frame."""
        pos, rot = self._object_pose()
        grasp = pos + rot @ self._grasp_local
        if self.goal.predicate == "on":
            t_lo, t_hi = self._bbox(self.goal.target)
            base = np.array([(t_lo[0] + t_hi[0]) / 2, (t_lo[1] + t_hi[1]) / 2, t_hi[2] + ON_CLEARANCE_M])
        else:  # "in" a region: its site marks the container's inside
            site = np.array(self.env.sim.data.get_site_xpos(self.goal.target))
            base = site + np.array([0.0, 0.0, IN_CLEARANCE_M])
        return grasp, self._width, base + self._grasp_above_bottom


def _descends(model: Any, body: int, ancestor: int) -> bool:
    while True:
        if body == ancestor:
            return True
        if body == 0:
            return False
        body = int(model.body_parentid[body])
