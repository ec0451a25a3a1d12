"""The OpenAPI 3.1 document of the companion, generated from the routes' body declarations
(bridge/http/route_bodies.py, which the routes validate with) and the configured settings: limits,
and whether API keys are required, are the running server's. A test keeps the paths in sync with
the router; a schemathesis run (tests/bridge/http/test_openapi_conformance.py) checks the rest."""

from __future__ import annotations

from typing import Any

from bridge.http.callers import AUTH_HEADER
from bridge.http.route_bodies import predict_form, v1_body
from bridge.http.settings import HttpSettings
from bridge.protocol import OP_ACT, OP_CAPTION, OP_DETECT, OP_POINT, OP_QUERY

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_STATUS_TEXT = {
    400: "Malformed request: bad JSON, a data URI that is not base64, an unreadable image, or a value the "
         "inference server refuses",
    401: f"Missing or invalid {AUTH_HEADER} (API keys are configured)",
    408: "The request body did not arrive within body_read_timeout_s",
    413: "Body or image over the configured limits, or a decompression bomb",
    415: "Wrong Content-Type",
    422: "The body violates this schema (a field missing, of the wrong type or out of range), or /predict's "
         "use_dummy_tactile contradicts the tactile data sent",
    429: "This caller already has max_inflight_per_caller requests in flight (retry)",
    501: "The inference server does not serve this op (e.g. the VLM is disabled)",
    502: "The inference server refused the companion (its configuration) or broke a stream",
    503: "Inference server unreachable, loading or overloaded (retry)",
    504: "The inference server did not answer in time",
}
_UPSTREAM_ERRORS = (501, 502, 503, 504)
_BODY_ERRORS = (400, 408, 413, 415, 422, 429)
_OBJECT = {"type": "object"}
_NUMBERS = {"type": "array", "items": {"type": "number"}}
_TEXT_RESULT = {"request_id": {"type": "string"}, "finish_reason": {"type": "string"}, "metrics": _OBJECT,
                "timing": _OBJECT}
_ERROR_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message", "retryable"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "retryable": {"type": "boolean"}},
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": _ERROR_FIELDS,
        "detail": {"type": "string", "description": "= error.message (the predecessor's key)"},
    },
}
_HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "model_loaded", "cuda_available", "api_key_enabled", "server"],
    "properties": {
        "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
        "model_loaded": {"type": "boolean"},
        "cuda_available": {"type": "boolean"},
        "gpu_memory": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "api_key_enabled": {"type": "boolean"},
        "server": _OBJECT,
        "models": _OBJECT,
    },
}


def _error_response(code: int) -> dict[str, Any]:
    return {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": _ERROR_REF}}}


def _result(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _sse_event(final: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event of a ``stream: true`` reply: chunks, then the final result or an error."""
    chunk = _result({"chunk": {"type": "string"}, "completed": {"const": False}})
    error = _result({"completed": {"const": True}, "request_id": {"type": "string"},
                     "error": _ERROR_FIELDS})
    done = {**final, "required": [*final["required"], "completed"],
            "properties": {**final["properties"], "completed": {"const": True}}}
    return {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"oneOf": [chunk, done, error]}},
    }}


def _responses(ok: str, ok_schema: dict[str, Any], codes: tuple[int, ...], sse: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ok_schema}}
    if sse:
        content["text/event-stream"] = {"schema": _sse_event(ok_schema)}
    responses: dict[str, Any] = {"200": {"description": ok, "content": content}}
    for code in sorted(codes):
        responses[str(code)] = _error_response(code)
    return responses


def _security(protected: bool) -> list[dict[str, list[str]]]:
    # (``Authorization: Bearer <key>`` is accepted too; documenting both as alternatives would
    # make a wrong Bearer header next to a right X-Moondream-Auth look like a request to refuse)
    return [{"MoondreamAuth": []}] if protected else []


def _model_codes(protected: bool) -> tuple[int, ...]:
    return (*_BODY_ERRORS, *_UPSTREAM_ERRORS, *((401,) if protected else ()))


def _v1(settings: HttpSettings, op: str, summary: str, result: dict[str, Any], sse: bool = False) -> dict[str, Any]:
    protected = bool(settings.api_keys)
    return {"post": {
        "summary": summary,
        "tags": ["moondream"],
        "security": _security(protected),
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": v1_body(op, settings).json_schema()}}},
        "responses": _responses("Result", _result(result), _model_codes(protected), sse=sse),
    }}


def _predict(settings: HttpSettings) -> dict[str, Any]:
    protected = bool(settings.api_keys) and not settings.open_predict
    form = predict_form(settings)
    result = _result({
        "success": {"type": "boolean"},
        "action": {**_NUMBERS,
                   "description": "dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper (0 open .. 1 closed)"},
        "action_breakdown": _OBJECT,
        "metadata": {"type": "object", "required": ["instruction", "image_size", "used_dummy_tactile"], "properties": {
            "instruction": {"type": ["string", "null"]},
            "image_size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "used_dummy_tactile": {"type": "boolean"},
        }},
    })
    return {"post": {
        "summary": "One VTLA action (predecessor-compatible)",
        "tags": ["vtla"],
        "security": _security(protected),  # keys protect /predict too, unless [http] open_predict = true
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": form.json_schema(), "encoding": form.encoding()}}},
        "responses": _responses("success, action, action_breakdown, metadata", result, _model_codes(protected)),
    }}


def _get(summary: str, tag: str, media: str = "application/json", codes: tuple[int, ...] = (),
         schema: dict[str, Any] | None = None) -> dict[str, Any]:
    ok_schema = schema or (_OBJECT if media == "application/json" else {"type": "string"})
    responses: dict[str, Any] = {"200": {"description": summary, "content": {media: {"schema": ok_schema}}}}
    for code in codes:
        responses[str(code)] = _error_response(code)
    return {"get": {"summary": summary, "tags": [tag], "responses": responses}}


def openapi_spec(version: str, settings: HttpSettings) -> dict[str, Any]:
    health = _get("Health of the companion and the inference server (503 when not ok)", "vtla",
                  schema=_HEALTH_SCHEMA)
    health["get"]["responses"]["503"] = {"description": "Not healthy (the same body)",
                                        "content": {"application/json": {"schema": _HEALTH_SCHEMA}}}
    text = {OP_CAPTION: "caption", OP_QUERY: "answer"}
    paths: dict[str, Any] = {
        "/predict": _predict(settings),
        "/health": health,
        "/stats": _get("VTLA action normalisation statistics", "vtla", codes=_UPSTREAM_ERRORS),
        "/v1/caption": _v1(settings, OP_CAPTION, "Caption an image",
                           {"caption": {"type": "string"}, **_TEXT_RESULT}, sse=True),
        "/v1/query": _v1(settings, OP_QUERY, "Answer a question about an image",
                         {text[OP_QUERY]: {"type": "string"}, **_TEXT_RESULT}, sse=True),
        "/v1/detect": _v1(settings, OP_DETECT, "Bounding boxes of an object (normalised, origin top-left)",
                          {"request_id": {"type": "string"}, "objects": {"type": "array", "items": _OBJECT}}),
        "/v1/point": _v1(settings, OP_POINT, "Points on an object (normalised, origin top-left)",
                         {"request_id": {"type": "string"}, "points": {"type": "array", "items": _OBJECT}}),
        "/v1/act": _v1(settings, OP_ACT, "A VTLA action chunk (H x 7, physical units)", {
            "request_id": {"type": "string"}, "action": _NUMBERS, "actions": {"type": "array", "items": _NUMBERS},
            "used_dummy_tactile": {"type": "boolean"}, "timing": _OBJECT}),
        "/api/status": _get("Status for the web UI: server, models, queue depth, recent latency", "meta"),
        "/metrics": _get("Prometheus metrics", "meta", "text/plain"),
        "/openapi.json": _get("This document", "meta"),
        "/docs": _get("API documentation page", "meta", "text/html"),
        "/": _get("Web UI", "meta", "text/html"),
    }
    for path, item in paths.items():
        for method, operation in item.items():
            slug = path.strip("/").replace("/", "_").replace(".", "_") or "root"
            operation.setdefault("operationId", f"{method}_{slug}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "vtla-bridge HTTP companion", "version": version,
                 "description": "Generated from the validators the routes use (bridge/http/route_bodies.py)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"MoondreamAuth": {
                "type": "apiKey", "in": "header", "name": AUTH_HEADER,
                "description": "one of the configured API keys; Authorization: Bearer <key> works too"}},
            "schemas": {"Error": _ERROR_SCHEMA},
        },
    }
