"""Web UI, status for it, docs, OpenAPI and Prometheus metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

import bridge
from bridge.http import keys
from bridge.http.openapi import openapi_spec

STATIC_DIR = Path(__file__).parent / "static"
_NO_CACHE = {"Cache-Control": "no-cache"}
# routes whose latency the status strip shows (the model work, not the UI's own requests)
_MODEL_ROUTES = ("predict", "act", "caption", "query", "detect", "point")


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


async def docs(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "docs.html", headers=_NO_CACHE)


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_spec(bridge.__version__, request.app[keys.SETTINGS]))


async def metrics(request: web.Request) -> web.StreamResponse:
    text = request.app[keys.METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def _model_summary(hello: Any, health: Any) -> list[dict[str, Any]]:
    """One entry per model: name, role, kind, loaded, random_weights, device, dtype (+ action spec)."""
    described = (hello or {}).get("models", {})
    summary = []
    for name, state in (health or {}).get("models", {}).items():
        entry = {"name": name, **{k: state.get(k) for k in ("role", "kind", "loaded", "random_weights",
                                                            "device", "dtype", "parameters", "source")}}
        action = described.get(name, {}).get("action")
        if isinstance(action, dict):
            entry["action"] = {k: action.get(k) for k in ("dim", "chunk_size", "names", "units")}
        summary.append(entry)
    return summary


async def status(request: web.Request) -> web.StreamResponse:
    upstream = request.app[keys.UPSTREAM]
    settings = request.app[keys.SETTINGS]
    health: Any = upstream.health if upstream.up else None
    body = {
        "server": {
            "endpoint": settings.server_endpoint,
            "reachable": upstream.up,
            "status": (health or {}).get("status", "unreachable"),
            "error": None if upstream.up else upstream.last_error,
            "ops": list((upstream.hello or {}).get("ops", [])) if upstream.up else [],
        },
        "device": (health or {}).get("device"),
        "dtype": (health or {}).get("dtype"),
        "queue_depth": (health or {}).get("queue_depth"),
        "models": _model_summary(upstream.hello, health),
        "latency_ms": {op: v for op, v in request.app[keys.METRICS].latency_summary().items() if op in _MODEL_ROUTES},
        "auth_required": bool(settings.api_keys),
        "version": bridge.__version__,
    }
    return web.json_response(body, headers=_NO_CACHE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="ui")
    app.router.add_get("/docs", docs, name="docs")
    app.router.add_get("/openapi.json", openapi, name="openapi")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/api/status", status, name="status")
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
