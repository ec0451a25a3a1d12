"""The openpi endpoint's aiohttp application: the websocket on ``/`` and ``GET /healthz``.

As openpi's ``WebsocketPolicyServer``: RFC 6455 on path ``/``, no compression, no frame-size
limit, ``/healthz`` answers ``200 OK\\n``. Unlike it, an ``Authorization: Api-Key <key>`` header
is checked when keys are configured (401 before the upgrade), and inference never blocks the
event loop: it runs in the inference server, batched across connections.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import zmq.asyncio
from aiohttp import web

from bridge.aio_client import AsyncBridgeClient
from bridge.openpi.connection import PolicyConnection
from bridge.openpi.settings import OpenpiSettings

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("openpi_settings", OpenpiSettings)
ZMQ_CONTEXT = web.AppKey("openpi_zmq_context", zmq.asyncio.Context)

_UPGRADE_HINT = (
    "this is an openpi websocket policy endpoint: connect with "
    "openpi_client.websocket_client_policy.WebsocketClientPolicy(host, port)\n"
)


def authorized(request: web.Request, api_keys: tuple[str, ...]) -> bool:
    """``Authorization: Api-Key <key>`` (openpi-client's header) names one of the keys."""
    if not api_keys:
        return True
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return scheme == "Api-Key" and any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def policy_websocket(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not authorized(request, settings.api_keys):
        return web.Response(status=401, text="missing or wrong 'Authorization: Api-Key <key>' header\n")
    # no compression; no frame-size limit unless [openpi] max_message_bytes sets one
    ws = web.WebSocketResponse(compress=False, max_msg_size=settings.max_message_bytes)
    if not ws.can_prepare(request).ok:
        return web.Response(status=426, text=_UPGRADE_HINT, headers={"Upgrade": "websocket"})
    await ws.prepare(request)
    peer = request.remote
    logger.info("openpi connection from %s opened", peer)
    client = AsyncBridgeClient(
        settings.server_endpoint,
        timeout_s=settings.request_timeout_s,
        auth=settings.server_token,
        context=request.app[ZMQ_CONTEXT],
    )
    connection = PolicyConnection(ws, client, settings)
    try:
        await connection.serve()
    finally:
        await client.close()
        logger.info("openpi connection from %s closed after %d observations", peer, connection.observations)
    return ws


async def _zmq_context(app: web.Application) -> AsyncIterator[None]:
    context = zmq.asyncio.Context()
    app[ZMQ_CONTEXT] = context
    yield
    context.destroy(linger=0)


def create_app(settings: OpenpiSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_zmq_context)
    app.router.add_get("/", policy_websocket, name="policy")
    app.router.add_get("/healthz", healthz, name="healthz")
    return app
