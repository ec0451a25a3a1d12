"""Scripted expert policies: served by ``act`` like a learned model, computed from privileged state.

Kinds (``[policy] kind = ...``): ``expert-lift``, ``expert-stack``, ``expert-pickplace``
(robosuite Lift / Stack / PickPlaceCan), ``expert-touch`` (the MuJoCo touch scene; holds by
touch), ``expert-fetch`` (gymnasium-robotics FetchPickAndPlace), ``expert-metaworld``
(Meta-World pick-place-v3, push-v3), ``expert-maniskill`` (ManiSkill3 PickCube-v1),
``expert-libero`` (LIBERO pick-and-place tasks; the adapter resolves the BDDL goal). ``[policy.options]`` may set
``chunk_size`` (actions per reply), ``touch_threshold_n`` and any :class:`ExpertParams` field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from models.experts.pick_place import ExpertParams, expert_chunk, expert_command
from models.experts.policy import ExpertPolicy, ExpertSpec
from vtla_contracts.model_spec import ModelSpec

__all__ = ["ExpertParams", "ExpertPolicy", "ExpertSpec", "expert_chunk", "expert_command", "load_expert"]

# per kind: the rule's parameters for that task
EXPERT_DEFAULTS: Mapping[str, dict[str, Any]] = {
    "expert-lift": {"release_at_target": False, "max_step_m": 0.03},
    "expert-stack": {"release_at_target": True, "max_step_m": 0.03},
    "expert-pickplace": {"release_at_target": True, "max_step_m": 0.03, "yaw_period_rad": 0.0},
    "expert-touch": {
        "release_at_target": False,
        "yaw_period_rad": 0.0,
        "grasp_offset_z_m": 0.012,
        "open_width_m": 0.08,
    },
    "expert-fetch": {
        "release_at_target": False,
        "yaw_period_rad": 0.0,
        "open_width_m": 0.1,
        "max_step_m": 0.03,
        "grasp_tol_m": 0.01,
    },
    # Meta-World: the mocap integrates commands and the hand lags it, so a low gain (a quarter of
    # the error per step) avoids overshoot; 0.01 m is one full action unit. The TCP rests on the
    # table 0.028 m above the puck's centre; success is within 7 cm of the goal, so it holds there.
    "expert-metaworld": {
        "release_at_target": False,
        "yaw_period_rad": 0.0,
        "open_width_m": 0.094,
        "max_step_m": 0.01,
        "gain": 0.25,
        "grasp_offset_z_m": 0.028,
        "grasp_tol_m": 0.01,
        "place_tol_m": 0.03,
    },
    # LIBERO: the adapter sends a grasp point fixed on the object (a bowl's rim, measured on its
    # collision geoms) as object_pos, and as object_width the finger reading closed on it; a rim
    # pinch is thin (width <= object_width + margin only once it is complete), hence the wider
    # hold distance. Release within 2 cm: the far plates of libero_spatial are at the arm's reach
    # (the elbow straight), where the hand stops up to 1.6 cm short of the target.
    "expert-libero": {
        "release_at_target": True,
        "yaw_period_rad": 0.0,
        "open_width_m": 0.078,
        "max_step_m": 0.04,
        "grasp_tol_m": 0.01,
        "place_tol_m": 0.02,
        "carry_clearance_m": 0.08,
        "hold_distance_m": 0.05,
    },
    # ManiSkill3 PickCube-v1: the cube (4 cm) must be held at the goal, pd_ee_delta_pose tracks well.
    "expert-maniskill": {
        "release_at_target": False,
        "open_width_m": 0.08,
        "max_step_m": 0.03,
        "grasp_tol_m": 0.008,
        "place_tol_m": 0.01,
    },
}
_SPEC_OPTIONS = ("chunk_size", "touch_threshold_n")


def expert_spec(kind: str, options: Mapping[str, Any]) -> ExpertSpec:
    if kind not in EXPERT_DEFAULTS:
        raise ValueError(f"unknown expert kind {kind!r}; known: {sorted(EXPERT_DEFAULTS)}")
    param_names = {f.name for f in dataclasses.fields(ExpertParams)}
    unknown = sorted(set(options) - param_names - set(_SPEC_OPTIONS))
    if unknown:
        raise ValueError(f"policy.options for {kind}: unknown key(s) {unknown}; known: "
                         f"{sorted(param_names | set(_SPEC_OPTIONS))}")
    param_values = {**EXPERT_DEFAULTS[kind], **{k: v for k, v in options.items() if k in param_names}}
    kwargs: dict[str, Any] = {
        k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in param_values.items()
    }
    params = ExpertParams(**kwargs)
    return ExpertSpec(
        kind=kind,
        params=params,
        chunk_size=int(options.get("chunk_size", 1)),
        touch=kind == "expert-touch",
        touch_threshold_n=float(options.get("touch_threshold_n", 0.5)),
    )


def load_expert(spec: ModelSpec, device: str, dtype: str) -> ExpertPolicy:
    """Registry factory: ``models.experts:load_expert`` for every ``expert-*`` kind."""
    if spec.path:
        raise ValueError(f"{spec.kind}: scripted experts have no checkpoint; leave [policy].path empty")
    return ExpertPolicy(expert_spec(spec.kind, spec.options), device, dtype)
