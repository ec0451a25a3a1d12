"""The aiohttp application factory: routes, middlewares, and the upstream monitor's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from bridge.http import keys, routes_meta, routes_predict, routes_v1
from bridge.http.errors import ERROR_CODE_KEY, Handler, error_middleware
from bridge.http.metrics import HttpMetrics
from bridge.http.settings import HttpSettings
from bridge.http.upstream import ClientFactory, Upstream, default_client_factory
from bridge.image_args import ImageLimits

logger = logging.getLogger(__name__)

_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request by route name (the op) and status; sets security headers."""
    metrics = request.app[keys.METRICS]
    route = request.match_info.route
    op = route.name if route.name else "other"
    started_s = time.perf_counter()
    metrics.in_flight.set(metrics.in_flight.value + 1)
    status = 500
    error_code: str | None = None
    try:
        response = await handler(request)
        status = response.status
        error_code = response.get(ERROR_CODE_KEY)
        if not response.prepared:
            for name, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response
    finally:
        metrics.in_flight.set(metrics.in_flight.value - 1)
        if op != "static":
            metrics.observe_request(op, status, time.perf_counter() - started_s, error_code)


def _upstream_context(client_factory: ClientFactory):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        upstream = Upstream(app[keys.SETTINGS], app[keys.METRICS], client_factory)
        app[keys.UPSTREAM] = upstream
        await upstream.start()
        monitor = asyncio.get_running_loop().create_task(upstream.run_monitor(), name="upstream-monitor")
        logger.info("HTTP companion talking to %s (%s)", upstream.settings.server_endpoint,
                    "reachable" if upstream.up else "not reachable yet")
        yield
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        await upstream.close()

    return context


def create_app(settings: HttpSettings, client_factory: ClientFactory = default_client_factory) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = HttpMetrics(settings.latency_window)
    app[keys.IMAGE_LIMITS] = ImageLimits(settings.max_image_width, settings.max_image_height, settings.max_image_pixels)
    app.cleanup_ctx.append(_upstream_context(client_factory))
    routes_predict.add_routes(app)
    routes_v1.add_routes(app)
    routes_meta.add_routes(app)
    return app
