"""The inference server as the HTTP companion sees it: one pipelined client plus a health monitor.

A background task probes ``health`` on its own client. While the server is unreachable the
handlers answer 503 at once instead of waiting; when it goes away, the request client is
replaced so that requests in flight fail fast; when it returns, the next probe marks it up
again and refreshes the cached ``hello``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from bridge.aio_client import AsyncBridgeClient
from bridge.curve_keys import CurveClientKeys
from bridge.errors import BridgeError, BridgeTimeout
from bridge.http.errors import ApiError, from_bridge_error
from bridge.http.metrics import HttpMetrics
from bridge.http.settings import HttpSettings
from bridge.messages import Partial, Reply

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str, float, str | None, CurveClientKeys | None], AsyncBridgeClient]


ROUTING_ID_PREFIX = "vtla-http"  # the server's [server.inflight_allowances] "vtla-http" matches it


def default_client_factory(
    endpoint: str, timeout_s: float, auth: str | None, curve: CurveClientKeys | None = None
) -> AsyncBridgeClient:
    # unique per socket (a replaced client must not collide with its predecessor at the ROUTER)
    routing_id = f"{ROUTING_ID_PREFIX}/{secrets.token_hex(6)}".encode()
    return AsyncBridgeClient(endpoint, timeout_s=timeout_s, auth=auth, routing_id=routing_id, curve=curve)


class Upstream:
    def __init__(
        self,
        settings: HttpSettings,
        metrics: HttpMetrics,
        client_factory: ClientFactory = default_client_factory,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._factory = client_factory
        self._client: AsyncBridgeClient | None = None
        self._probe: AsyncBridgeClient | None = None
        self.up = False
        self.health: Mapping[str, Any] | None = None
        self.hello: Mapping[str, Any] | None = None
        self.last_error: str | None = "not probed yet"
        self.last_probe_at: float | None = None  # time.time() of the last probe answered
        self._failures = 0
        self._closing: set[asyncio.Task[None]] = set()  # old clients being closed (tasks kept alive)

    # ------------------------------------------------------------------ lifecycle

    def _new_client(self) -> AsyncBridgeClient:
        s = self.settings
        return self._factory(s.server_endpoint, s.request_timeout_s, s.server_token, s.curve)

    async def start(self) -> None:
        self._client = self._new_client()
        s = self.settings
        self._probe = self._factory(s.server_endpoint, s.probe_timeout_s, s.server_token, s.curve)
        await self.probe_once()

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for client in (self._client, self._probe):
            if client is not None:
                await client.close()
        self._client = self._probe = None

    async def run_monitor(self) -> None:
        """Probe forever (until cancelled)."""
        while True:
            await asyncio.sleep(self.settings.probe_interval_s)
            await self.probe_once()

    async def probe_once(self) -> None:
        assert self._probe is not None, "start() first"
        try:
            health = await self._probe.health(timeout_s=self.settings.probe_timeout_s)
            hello = self.hello if self.up and self.hello is not None else await self._probe.hello()
        except BridgeTimeout as exc:
            self._on_failure(exc)
            return
        except BridgeError as exc:
            # the server answered, with an error (e.g. it refuses the companion's token): it is
            # reachable, and requests will report the real problem instead of "unreachable"
            if self.last_error != str(exc):
                logger.error("inference server %s answers health with an error: %s", self.settings.server_endpoint,
                             exc)
            self._mark_up(None, self.hello)
            self.last_error = str(exc)
            return
        self._mark_up(health, hello)

    def _mark_up(self, health: Mapping[str, Any] | None, hello: Mapping[str, Any] | None) -> None:
        was_up = self.up
        self.health, self.hello, self.up = health, hello, True
        self._failures, self.last_error, self.last_probe_at = 0, None, time.time()
        self.metrics.server_up.set(1)
        depth = (health or {}).get("queue_depth")
        if isinstance(depth, (int, float)):
            self.metrics.queue_depth.set(depth)
        transport = (health or {}).get("transport")
        if isinstance(transport, Mapping):
            dropped = [v for k, v in transport.items() if k.startswith("replies_dropped") and isinstance(v, int)]
            self.metrics.replies_dropped.set(sum(dropped))
        if not was_up:
            logger.info("inference server %s is reachable (status %s)", self.settings.server_endpoint,
                        (health or {}).get("status"))

    def _on_failure(self, exc: BridgeTimeout) -> None:
        self._failures += 1
        self.last_error = str(exc)
        if not self.up:
            return
        if self._failures < self.settings.down_after_failures:
            return
        logger.warning("inference server %s unreachable: %s", self.settings.server_endpoint, exc)
        self.up = False
        self.metrics.server_up.set(0)
        # requests in flight on the old connection fail now (503) instead of at their timeout
        old, self._client = self._client, self._new_client()
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ requests

    def require_up(self) -> AsyncBridgeClient:
        if not self.up or self._client is None:
            raise ApiError(503, "server_unreachable", "inference server is unreachable", retryable=True)
        return self._client

    def translate(self, exc: BridgeError) -> ApiError:
        return from_bridge_error(exc, self.up)

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Reply:
        client = self.require_up()
        try:
            reply = await client.call(op, args, deadline_ms=self.settings.request_timeout_s * 1000.0)
        except BridgeError as exc:
            raise self.translate(exc) from None
        self.metrics.observe_timing(op, reply.timing)
        return reply

    async def stream(self, op: str, args: Mapping[str, Any]) -> AsyncGenerator[Partial | Reply, None]:
        """Partial chunks then the final Reply; errors arrive as ApiError."""
        client = self.require_up()
        events = client.stream(op, args, deadline_ms=self.settings.request_timeout_s * 1000.0)
        try:
            async for event in events:
                if isinstance(event, Reply):
                    self.metrics.observe_timing(op, event.timing)
                yield event
        except BridgeError as exc:
            raise self.translate(exc) from None
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator
