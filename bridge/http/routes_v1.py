"""Moondream-compatible ``/v1`` endpoints (caption, query, detect, point) and ``/v1/act``.

Bodies follow Moondream's HTTP API: ``image_url`` is a ``data:`` URI; ``stream: true`` on caption
and query answers with Server-Sent Events: ``data: {"chunk": ..., "completed": false}`` per chunk,
then one ``data: {"completed": true, ...}`` with the full text, finish reason and metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import web

from bridge.http import keys
from bridge.http.errors import ApiError
from bridge.http.requests_json import header_safe, new_request_id, read_json_object
from bridge.http.route_bodies import v1_body
from bridge.http.uploads import decode_data_uri, load_image, load_rgb_array
from bridge.messages import Partial, Reply
from bridge.protocol import OP_ACT, OP_CAPTION, OP_DETECT, OP_POINT, OP_QUERY

logger = logging.getLogger(__name__)

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


async def _image_arg(request: web.Request, uri: str, field: str = "image_url") -> Any:
    data = decode_data_uri(uri, field)
    # off the event loop: reading the header is cheap, but formats other than JPEG/PNG decode here
    image = await asyncio.to_thread(load_image, data, request.app[keys.IMAGE_LIMITS], field)
    return image.arg


async def _checked_body(request: web.Request, op: str) -> tuple[dict[str, Any], str]:
    """The body checked against the route's declaration (bridge/http/route_bodies.py) and its request id."""
    body = v1_body(op, request.app[keys.SETTINGS]).validate(await read_json_object(request))
    return body, body.get("request_id") or new_request_id(op)


async def _prepare(request: web.Request, op: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    body, rid = await _checked_body(request, op)  # (API key and per-caller limit: bridge/http/callers.py)
    args: dict[str, Any] = {}
    for key in ("length", "question", "object", "settings"):
        if body.get(key):
            args[key] = body[key]
    args["image"] = await _image_arg(request, body["image_url"])
    return body, args, rid


def _json(payload: Mapping[str, Any], rid: str, timing: Mapping[str, float]) -> web.Response:
    headers = {"X-Request-Id": header_safe(rid)}
    if timing:
        headers["Server-Timing"] = server_timing(timing)
    return web.json_response(payload, headers=headers)


async def _text_op(request: web.Request, op: str) -> web.StreamResponse:
    body, args, rid = await _prepare(request, op)
    upstream = request.app[keys.UPSTREAM]
    if body["stream"]:
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
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "X-Request-Id": header_safe(rid)}
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
        await events.aclose()  # early (the caller disconnected: a write failed): the client sends cancel
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


async def act(request: web.Request) -> web.StreamResponse:
    """``{"image_url", "instruction"?, "force_torque"?, "tactile_image_url"?, "session"?}`` -> the action chunk."""
    body, rid = await _checked_body(request, OP_ACT)
    args: dict[str, Any] = {"image": await _image_arg(request, body["image_url"])}
    if body.get("instruction"):
        args["instruction"] = body["instruction"]
    tactile: dict[str, np.ndarray] = {}
    if "force_torque" in body:
        tactile["force_torque"] = np.asarray(body["force_torque"], dtype=np.float32)
    if "tactile_image_url" in body:
        data = decode_data_uri(body["tactile_image_url"], "tactile_image_url")
        tactile["image"] = await asyncio.to_thread(  # a full decode: never on the event loop
            load_rgb_array, data, request.app[keys.IMAGE_LIMITS], "tactile_image_url"
        )
    if tactile:
        args["tactile"] = tactile
    if body.get("session"):
        args["session"] = body["session"]
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
