"""The OpenAPI 3.1 description of the companion's routes (a test keeps it in sync with the router)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str, ok_schema: dict[str, Any] | None = None, *codes: int, sse: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ok_schema or {"type": "object"}}}
    if sse:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "data: {json}\\n\\n events"}}
    responses: dict[str, Any] = {"200": {"description": ok, "content": content}}
    for code in codes:
        responses[str(code)] = {"description": _STATUS_TEXT[code],
                                "content": {"application/json": {"schema": _ERROR}}}
    return responses


_STATUS_TEXT = {
    400: "Malformed request (bad JSON, bad data URI, unreadable image)",
    401: "Missing or invalid X-Moondream-Auth (when API keys are configured)",
    408: "The request body did not arrive within body_read_timeout_s",
    413: "Body or image over the configured limits, or a decompression bomb",
    415: "Wrong Content-Type",
    422: "A field is missing or has the wrong type",
    429: "This caller already has max_inflight_per_caller requests in flight (retry)",
    501: "The inference server does not serve this op (e.g. the VLM is disabled)",
    503: "Inference server unreachable, loading or overloaded (retry)",
    504: "The inference server did not answer in time",
}
_V1_ERRORS = (400, 401, 408, 413, 415, 422, 429, 501, 503, 504)
_IMAGE_URL = {"type": "string", "description": "data:image/jpeg;base64,... (or png, webp, ...)"}
_SETTINGS = {
    "type": "object",
    "properties": {
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "max_tokens": {"type": "integer"},
        "max_objects": {"type": "integer"},
    },
}
_REQUEST_ID = {"type": "string", "minLength": 1, "maxLength": 200, "description": "echoed back; generated when absent"}
_METRICS = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in
                   ("input_tokens", "output_tokens", "prefill_time_ms", "decode_time_ms", "ttft_ms")},
}


def _v1(summary: str, required: list[str], properties: dict[str, Any], result: dict[str, Any],
        sse: bool = False) -> dict[str, Any]:
    props = {"image_url": _IMAGE_URL, **properties, "settings": _SETTINGS, "request_id": _REQUEST_ID}
    return {
        "post": {
            "summary": summary,
            "tags": ["moondream"],
            "security": [{"MoondreamAuth": []}, {}],
            "requestBody": _json_body({"type": "object", "required": ["image_url", *required], "properties": props}),
            "responses": _responses("Result", {"type": "object", "properties": result}, *_V1_ERRORS, sse=sse),
        }
    }


def _get(summary: str, tag: str, media: str = "application/json", *codes: int) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "content": {media: {"schema": {"type": "object"}
                                                                                      if media == "application/json"
                                                                                      else {"type": "string"}}}}}
    for code in codes:
        responses[str(code)] = {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": _ERROR}}}
    return {"get": {"summary": summary, "tags": [tag], "responses": responses}}


def openapi_spec(version: str) -> dict[str, Any]:
    text_result = {"finish_reason": {"type": "string"}, "metrics": _METRICS, "request_id": {"type": "string"}}
    paths: dict[str, Any] = {
        "/predict": {
            "post": {
                "summary": "One VTLA action (predecessor-compatible)",
                "tags": ["vtla"],
                # keys protect /predict too, unless [http] open_predict = true
                "security": [{"MoondreamAuth": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "instruction": {"type": "string"},
                                    "use_dummy_tactile": {"type": "boolean", "default": True},
                                    "tactile_image": {"type": "string", "format": "binary"},
                                    "force_torque": {"type": "string", "description": "JSON list of 6 numbers"},
                                },
                            }
                        }
                    },
                },
                "responses": _responses(
                    "success, action, action_breakdown, metadata", None, 400, 401, 408, 413, 415, 422, 429, 503, 504
                ),
            }
        },
        "/health": _get("Health of the companion and the inference server (503 when not ok)", "vtla",
                        "application/json", 503),
        "/stats": _get("VTLA action normalisation statistics", "vtla", "application/json", 503),
        "/v1/caption": _v1("Caption an image", [], {
            "length": {"type": "string", "enum": ["short", "normal", "long"], "default": "normal"},
            "stream": {"type": "boolean", "default": False},
        }, {"caption": {"type": "string"}, **text_result}, sse=True),
        "/v1/query": _v1("Answer a question about an image", ["question"], {
            "question": {"type": "string"}, "stream": {"type": "boolean", "default": False},
        }, {"answer": {"type": "string"}, **text_result}, sse=True),
        "/v1/detect": _v1("Bounding boxes of an object (normalised, origin top-left)", ["object"],
                          {"object": {"type": "string"}}, {"objects": {"type": "array", "items": {"type": "object"}}}),
        "/v1/point": _v1("Points on an object (normalised, origin top-left)", ["object"],
                         {"object": {"type": "string"}}, {"points": {"type": "array", "items": {"type": "object"}}}),
        "/v1/act": _v1("A VTLA action chunk (H x 7, physical units)", [], {
            "instruction": {"type": "string"},
            "force_torque": {"type": "array", "items": {"type": "number"}, "minItems": 6, "maxItems": 6},
            "tactile_image_url": _IMAGE_URL,
            "session": {"type": "string"},
        }, {"action": {"type": "array"}, "actions": {"type": "array"}, "timing": {"type": "object"}}),
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
        "info": {"title": "vtla-bridge HTTP companion", "version": version},
        "paths": paths,
        "components": {
            "securitySchemes": {"MoondreamAuth": {"type": "apiKey", "in": "header", "name": "X-Moondream-Auth"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                           "retryable": {"type": "boolean"}},
                        },
                        "detail": {"type": "string"},
                    },
                }
            },
        },
    }
