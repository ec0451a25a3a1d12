"""The predecessor Nano-VTLA API: ``POST /predict``, ``GET /health``, ``GET /stats``.

``/predict`` answers exactly the predecessor's JSON shape (``success``, ``action``,
``action_breakdown``, ``metadata``); server timing travels in a ``Server-Timing`` header.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from bridge.http import keys
from bridge.http.errors import UNSUPPORTED_MEDIA_TYPE, ApiError
from bridge.http.requests_json import read_form
from bridge.http.route_bodies import predict_form
from bridge.http.routes_v1 import server_timing
from bridge.http.uploads import load_image, load_rgb_array
from bridge.protocol import OP_ACT, OP_STATS
from vtla_contracts.action_layout import ACTION_DIM

_FORM_TYPES = ("multipart/form-data",)  # the image is a file: an urlencoded form cannot carry one


def action_breakdown(action: list[float]) -> dict[str, Any]:
    dx, dy, dz, droll, dpitch, dyaw, gripper = action
    return {
        "translation": {"dx": dx, "dy": dy, "dz": dz, "unit": "meters"},
        "rotation": {"droll": droll, "dpitch": dpitch, "dyaw": dyaw, "unit": "radians"},
        "gripper": {"value": gripper, "range": "0 (open) to 1 (closed)"},
    }


async def predict(request: web.Request) -> web.StreamResponse:
    if request.content_type not in _FORM_TYPES:
        raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, f"expected multipart/form-data, got {request.content_type!r}")
    upstream = request.app[keys.UPSTREAM]
    upstream.require_up()  # before reading a large upload
    form = await read_form(request)  # bounded by client_max_size (-> 413) and in time (-> 408)
    fields = predict_form(request.app[keys.SETTINGS]).validate(form)  # bridge/http/route_bodies.py
    limits = request.app[keys.IMAGE_LIMITS]
    image = await asyncio.to_thread(load_image, fields["image"], limits, "image")  # off the event loop
    instruction = fields.get("instruction")
    tactile: dict[str, np.ndarray] = {}
    ft_text = fields.get("force_torque", "")
    if ft_text.strip():  # the pattern admits only JSON lists of FORCE_TORQUE_DIM float32-sized numbers
        tactile["force_torque"] = np.asarray(json.loads(ft_text), dtype=np.float32)
    if "tactile_image" in fields:
        tactile["image"] = await asyncio.to_thread(load_rgb_array, fields["tactile_image"], limits, "tactile_image")
    args: dict[str, Any] = {"image": image.arg}
    if instruction:
        args["instruction"] = instruction
    if tactile:
        args["tactile"] = tactile
    reply = await upstream.call(OP_ACT, args)
    action = [float(v) for v in np.asarray(reply.result["action"], dtype=np.float32).reshape(-1)]
    if len(action) != ACTION_DIM:
        raise ApiError(500, "internal", f"the policy's action has {len(action)} dims; /predict needs {ACTION_DIM}")
    body = {
        "success": True,
        "action": action,
        "action_breakdown": action_breakdown(action),
        "metadata": {
            "instruction": instruction,
            "image_size": [image.width, image.height],
            "used_dummy_tactile": not tactile,
        },
    }
    return web.json_response(body, headers={"Server-Timing": server_timing(reply.timing)})


def _gpu_memory(health: Any) -> str | None:
    gb = health.get("gpu_memory_gb")
    return f"{gb:.2f} GB" if isinstance(gb, (int, float)) else None


async def health(request: web.Request) -> web.StreamResponse:
    """Both predecessors' keys; 200 when the server is reachable and ok, 503 otherwise."""
    upstream = request.app[keys.UPSTREAM]
    settings = request.app[keys.SETTINGS]
    state: Any = upstream.health if upstream.up and upstream.health is not None else {}
    models = state.get("models", {})
    policy_loaded = any(m.get("loaded") for m in models.values() if m.get("role") == "policy")
    vlm_names = [name for name, m in models.items() if m.get("role") == "vlm" and m.get("loaded")]
    server_status = state.get("status") if upstream.up else "unreachable"
    healthy = upstream.up and server_status == "ok"
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "model_loaded": policy_loaded,
        "cuda_available": bool(state.get("cuda_available", False)),
        "gpu_memory": _gpu_memory(state),
        "model": vlm_names[0] if vlm_names else None,
        "api_key_enabled": bool(settings.api_keys),
        "server": {
            "endpoint": settings.server_endpoint,
            "reachable": upstream.up,
            "status": server_status,
            "error": None if upstream.up else upstream.last_error,
        },
        "models": models,
        "device": state.get("device"),
        "queue_depth": state.get("queue_depth"),
    }
    return web.json_response(body, status=200 if healthy else 503)


async def stats(request: web.Request) -> web.StreamResponse:
    reply = await request.app[keys.UPSTREAM].call(OP_STATS)
    return web.json_response(dict(reply.result))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/predict", predict, name="predict")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/stats", stats, name="stats")
