"""One openpi websocket connection: metadata on connect, then observation -> actions, in turn.

The byte-level protocol is openpi's (``openpi_client.websocket_client_policy``): after the
handshake the server sends one binary frame ``packb(metadata)``; then each binary frame from the
client is ``packb(observation)`` and is answered with one binary frame ``packb(reply)``, where
``reply = {"actions": float32 (H, D), "server_timing": {...}, "policy_timing": {...}}``, every
array inline. An error is one text frame with the message, then a close with code 1011, which
openpi's client turns into a ``RuntimeError``.

Each connection is a ZeroMQ client (:class:`~bridge.aio_client.AsyncBridgeClient`) of the one
inference loop, so the observations of all connections are batched together there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

import bridge
from bridge.aio_client import AsyncBridgeClient
from bridge.codec import decode_header, encode_message
from bridge.errors import BridgeError
from bridge.openpi.mapping import MappingError, PolicyView, resolved, to_act_args
from bridge.openpi.settings import OpenpiSettings
from bridge.protocol import ErrorCode, ProtocolError
from vtla_contracts.openpi_keys import KeyMapping

logger = logging.getLogger(__name__)

UNITS_NOTE = (
    "actions are in the served model's own units (action.names / action.units), de-normalised by the "
    "bridge with the model's statistics; nothing is rescaled for the client's robot"
)
_CLOSE_REASON = b"error, message in the previous frame"


def pack(value: Mapping[str, Any]) -> bytes:
    """openpi-compatible msgpack: str keys, numpy arrays as inline ``__ndarray__`` maps."""
    return bytes(encode_message(dict(value), None)[0])


def connection_metadata(hello: Mapping[str, Any], policy: PolicyView, mapping: KeyMapping) -> dict[str, Any]:
    """What ``WebsocketClientPolicy.get_server_metadata()`` returns."""
    action = dict(policy.entry["action"])
    return {
        "server": {"name": "vtla-bridge openpi endpoint", "version": bridge.__version__},
        "models": {name: entry.get("kind", "") for name, entry in (hello.get("models") or {}).items()},
        "policy": policy.name,
        "action": action,
        "action_dim": action.get("dim"),
        "chunk_size": action.get("chunk_size"),
        "action_horizon": action.get("chunk_size"),
        "units": UNITS_NOTE,
        "cameras": list(policy.cameras),
        "image_size": policy.entry.get("image_size"),
        "proprio": policy.entry.get("proprio"),
        "tactile": policy.entry.get("tactile") or {},
        "random_weights": bool(policy.entry.get("random_weights", False)),
        "key_mapping": {"name": mapping.name, "keys": resolved(mapping, policy)},
        "batching": "observations of all connections are batched together by the bridge's inference loop",
    }


class PolicyConnection:
    """Serves one accepted websocket until the client leaves or an error closes it."""

    def __init__(self, ws: web.WebSocketResponse, client: AsyncBridgeClient, settings: OpenpiSettings) -> None:
        self.ws = ws
        self.client = client
        self.settings = settings
        self.session = f"openpi-{uuid.uuid4().hex[:16]}"  # per-connection state key for stateful policies
        self.observations = 0

    async def serve(self) -> None:
        try:
            await self._serve()
        except (MappingError, ProtocolError, BridgeError) as exc:
            await self._fail(_message(exc))
        except ConnectionError as exc:  # the client left while its observation was being served
            logger.info("openpi client left: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not leave the client waiting: say so, like openpi does
            logger.exception("openpi connection failed")
            await self._fail(f"{ErrorCode.INTERNAL}: unexpected error in the openpi endpoint (details in its log)")
        finally:
            if self.observations:
                await self._reset()

    async def _serve(self) -> None:
        hello, policy = await self._wait_for_policy()
        await self.ws.send_bytes(pack(connection_metadata(hello, policy, self.settings.mapping)))
        prev_total_ms: float | None = None
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                started_s = time.perf_counter()
                reply = await self._infer(message.data, policy, prev_total_ms)
                await self.ws.send_bytes(reply)
                prev_total_ms = (time.perf_counter() - started_s) * 1000.0
            elif message.type == WSMsgType.TEXT:
                raise MappingError(
                    "observations are binary frames: openpi_client.msgpack_numpy.packb(obs), got a text frame"
                )
            elif message.type == WSMsgType.ERROR:
                logger.info("openpi connection error: %s", self.ws.exception())
                return

    async def _wait_for_policy(self) -> tuple[Mapping[str, Any], PolicyView]:
        """hello -> the policy's entry; while the server is still loading, ask again (bounded)."""
        deadline_s = time.monotonic() + self.settings.request_timeout_s
        while True:
            remaining_s = max(0.1, deadline_s - time.monotonic())
            hello = await self.client.hello(timeout_s=remaining_s)
            policy = PolicyView.from_hello(hello)
            if policy is not None:
                return hello, policy
            if time.monotonic() >= deadline_s:
                health = await self.client.health(timeout_s=remaining_s)
                detail = health.get("detail") or f"status {health.get('status')!r}"
                raise BridgeError(
                    ErrorCode.MODEL_UNAVAILABLE,
                    f"the inference server at {self.settings.server_endpoint} serves no policy ({detail})",
                    True,
                )
            await asyncio.sleep(self.settings.policy_poll_s)

    async def _infer(self, data: bytes, policy: PolicyView, prev_total_ms: float | None) -> bytes:
        obs = decode_header(data, [], self.settings.max_array_bytes)
        args = to_act_args(obs, self.settings.mapping, policy)
        sent_s = time.perf_counter()
        result = await self.client.act(**args, session=self.session, timeout_s=self.settings.request_timeout_s)
        infer_ms = (time.perf_counter() - sent_s) * 1000.0
        self.observations += 1
        timing: dict[str, Any] = {"infer_ms": infer_ms}
        if prev_total_ms is not None:
            timing["prev_total_ms"] = prev_total_ms
        for key in ("queue_ms", "compute_ms", "server_ms"):
            timing[key] = float(result.timing.get(key, 0.0))
        timing["batch_size"] = int(result.timing.get("batch_size", 1))
        reply = {
            "actions": result.actions,  # (H, D) float32, H first, the model's own units
            "server_timing": timing,
            "policy_timing": {"infer_ms": timing["compute_ms"]},
        }
        return pack(reply)

    async def _fail(self, message: str) -> None:
        logger.info("openpi connection closed with an error: %s", message)
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(message)
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=_CLOSE_REASON)
        except (ConnectionError, RuntimeError) as exc:  # the client left first
            logger.debug("could not report the error to the client: %s", exc)

    async def _reset(self) -> None:
        """The client is gone: let a stateful policy forget this connection's session."""
        try:
            await self.client.reset(self.session, timeout_s=2.0)
        except BridgeError as exc:
            logger.debug("reset of %s failed: %s", self.session, exc)


def _message(exc: Exception) -> str:
    if isinstance(exc, MappingError):
        return f"{ErrorCode.BAD_REQUEST}: {exc}"
    if isinstance(exc, ProtocolError):
        return f"{exc.code}: {exc.message}"
    return str(exc)  # BridgeError: "code: message"
