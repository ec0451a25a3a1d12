"""Moondream-compatible ``/v1`` endpoints (caption, query, detect, point) and ``/v1/act``.

Bodies follow Moondream's HTTP API: ``image_url`` is a ``data:`` URI; ``stream: true`` on caption
and query answers with Server-Sent Events: ``data: {"chunk": ..., "completed": false}`` per chunk,
then one ``data: {"completed": true, ...}`` with the full text, finish reason and metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import web

from bridge.http import keys
from bridge.http.errors import ApiError
from bridge.http.requests_json import (
    check_api_key,
    invalid,
    one_of,
    optional_bool,
    optional_str,
    read_json_object,
    request_id,
    required_str,
    settings_arg,
)
from bridge.http.uploads import decode_data_uri, load_image, load_rgb_array
from bridge.messages import Partial, Reply
from bridge.protocol import CAPTION_LENGTHS, OP_ACT, OP_CAPTION, OP_DETECT, OP_POINT, OP_QUERY
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

logger = logging.getLogger(__name__)

_MAX_TEXT_CHARS = 2000
# the server's metric names -> the predecessor service's
_METRIC_NAMES: Mapping[str, str] = {"prefill_ms": "prefill_time_ms", "decode_ms": "decode_time_ms"}
_TEXT_KEY: Mapping[str, str] = {OP_CAPTION: "caption", OP_QUERY: "answer"}


def _metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    raw = result.get("metrics") or {}
    return {_METRIC_NAMES.get(k, k): v for k, v in raw.items()}


def server_timing(timing: Mapping[str, float]) -> str:
    """A reply's timing as a ``Server-Timing`` header value (shows up in browser dev tools)."""
    parts = [f"{key[:-3]};dur={value:.3f}" for key, value in timing.items()
             if key.endswith("_ms") and isinstance(value, (int, float))]
    return ", ".join(parts)


def _image_arg(request: web.Request, body: dict[str, Any]) -> Any:
    data = decode_data_uri(body.get("image_url"))
    return load_image(data, request.app[keys.IMAGE_LIMITS], "image_url").arg


async def _prepare(request: web.Request, op: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    check_api_key(request, request.app[keys.SETTINGS].api_keys)
    body = await read_json_object(request)
    rid = request_id(body, op)
    args: dict[str, Any] = {}
    if op == OP_CAPTION:
        args["length"] = one_of(body, "length", CAPTION_LENGTHS, "normal")
    elif op == OP_QUERY:
        args["question"] = required_str(body, "question", _MAX_TEXT_CHARS)
    else:
        args["object"] = required_str(body, "object", _MAX_TEXT_CHARS)
    settings = settings_arg(body)
    if settings is not None:
        args["settings"] = settings
    args["image"] = _image_arg(request, body)
    return body, args, rid


def _json(payload: Mapping[str, Any], rid: str, timing: Mapping[str, float]) -> web.Response:
    headers = {"X-Request-Id": rid}
    if timing:
        headers["Server-Timing"] = server_timing(timing)
    return web.json_response(payload, headers=headers)


async def _text_op(request: web.Request, op: str) -> web.StreamResponse:
    body, args, rid = await _prepare(request, op)
    upstream = request.app[keys.UPSTREAM]
    if optional_bool(body, "stream"):
        return await _stream_text(request, op, args, rid)
    reply = await upstream.call(op, args)
    key = _TEXT_KEY[op]
    payload = {
        "request_id": rid,
        key: reply.result.get(key, ""),
        "finish_reason": reply.result.get("finish_reason", ""),
        "metrics": _metrics(reply.result),
        "timing": dict(reply.timing),
    }
    logger.debug("%s %s: %.1f ms", op, rid, reply.round_trip_ms)
    return _json(payload, rid, reply.timing)


def _sse(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _stream_text(request: web.Request, op: str, args: dict[str, Any], rid: str) -> web.StreamResponse:
    upstream = request.app[keys.UPSTREAM]
    events = upstream.stream(op, args)
    try:
        first = await anext(events)  # errors before the first event keep their HTTP status
    except StopAsyncIteration:
        raise ApiError(502, "bad_gateway", "the inference server ended the stream without a reply") from None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Request-Id": rid}
    )
    await response.prepare(request)
    key = _TEXT_KEY[op]
    try:
        event: Partial | Reply | None = first
        while event is not None:
            if isinstance(event, Partial):
                if event.chunk:
                    await response.write(_sse({"chunk": event.chunk, "completed": False}))
            else:
                final = {
                    "completed": True,
                    "request_id": rid,
                    key: event.result.get(key, ""),
                    "finish_reason": event.result.get("finish_reason", ""),
                    "metrics": _metrics(event.result),
                    "timing": dict(event.timing),
                }
                await response.write(_sse(final))
                break
            event = await anext(events, None)
    except ApiError as exc:  # headers are gone: the error travels as the final event
        error = {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
        await response.write(_sse({"completed": True, "request_id": rid, "error": error}))
    finally:
        await events.aclose()
    await response.write_eof()
    return response


async def caption(request: web.Request) -> web.StreamResponse:
    return await _text_op(request, OP_CAPTION)


async def query(request: web.Request) -> web.StreamResponse:
    return await _text_op(request, OP_QUERY)


async def detect(request: web.Request) -> web.StreamResponse:
    _, args, rid = await _prepare(request, OP_DETECT)
    reply = await request.app[keys.UPSTREAM].call(OP_DETECT, args)
    return _json({"request_id": rid, "objects": list(reply.result.get("objects", []))}, rid, reply.timing)


async def point(request: web.Request) -> web.StreamResponse:
    _, args, rid = await _prepare(request, OP_POINT)
    reply = await request.app[keys.UPSTREAM].call(OP_POINT, args)
    return _json({"request_id": rid, "points": list(reply.result.get("points", []))}, rid, reply.timing)


def _force_torque(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == FORCE_TORQUE_DIM
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise invalid("force_torque", f"a list of {FORCE_TORQUE_DIM} numbers", value)
    return np.asarray(value, dtype=np.float32)


async def act(request: web.Request) -> web.StreamResponse:
    """``{"image_url", "instruction"?, "force_torque"?, "tactile_image_url"?, "session"?}`` -> the action chunk."""
    settings = request.app[keys.SETTINGS]
    check_api_key(request, settings.api_keys)
    body = await read_json_object(request)
    rid = request_id(body, OP_ACT)
    args: dict[str, Any] = {"image": _image_arg(request, body)}
    instruction = optional_str(body, "instruction", settings.max_instruction_chars)
    if instruction:
        args["instruction"] = instruction
    tactile: dict[str, np.ndarray] = {}
    ft = _force_torque(body.get("force_torque"))
    if ft is not None:
        tactile["force_torque"] = ft
    if body.get("tactile_image_url") is not None:
        data = decode_data_uri(body["tactile_image_url"], "tactile_image_url")
        tactile["image"] = load_rgb_array(data, request.app[keys.IMAGE_LIMITS], "tactile_image_url")
    if tactile:
        args["tactile"] = tactile
    session = optional_str(body, "session", 200)
    if session:
        args["session"] = session
    reply = await request.app[keys.UPSTREAM].call(OP_ACT, args)
    actions = np.asarray(reply.result["actions"], dtype=np.float32)  # (H, action_dim)
    payload = {
        "request_id": rid,
        "action": actions[0].tolist(),
        "actions": actions.tolist(),
        "used_dummy_tactile": not tactile,
        "timing": dict(reply.timing),
    }
    return _json(payload, rid, reply.timing)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/caption", caption, name="caption")
    app.router.add_post("/v1/query", query, name="query")
    app.router.add_post("/v1/detect", detect, name="detect")
    app.router.add_post("/v1/point", point, name="point")
    app.router.add_post("/v1/act", act, name="act")
