"""openpi's websocket policy server loop, reimplemented for the transport benchmark.

    python -m bench.openpi_server --port 8000 [--forward-ms 5] [--chunk 1]

This is **not** openpi's code: it is a reimplementation, written for this benchmark, of the
behaviour of openpi's ``WebsocketPolicyServer`` (``src/openpi/serving/websocket_policy_server.py``
in Physical-Intelligence/openpi), so that the bridge can be compared with it side by side:

* ``websockets.asyncio.server.serve`` with ``compression=None`` and ``max_size=None``, and a
  ``GET /healthz`` answered 200 before the handshake;
* one handler coroutine per connection: it sends the metadata map packed with
  ``openpi_client.msgpack_numpy.Packer`` on connect, then loops ``recv`` → ``msgpack_numpy.unpackb``
  → ``policy.infer(obs)`` (synchronous, on the event loop, as openpi does) → adds
  ``server_timing = {"infer_ms", "prev_total_ms"}`` → ``packer.pack`` → ``send``;
* a closed connection ends its handler; any other exception sends the traceback as a text frame
  and closes the connection with code 1011 (internal error).

The policy is a flat-cost stand-in (:class:`FlatCostPolicy`): ``infer`` waits ``forward_ms`` (a
sleep, no CPU, as a GPU forward roughly is from the host's point of view) and returns zero
actions, the same as the bridge's benchmark null policy with ``batch_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import logging
import time
import traceback
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ACTION_DIM = 7


class FlatCostPolicy:
    """openpi's ``BasePolicy.infer`` shape: obs dict -> {"actions": (chunk, 7) float32}."""

    def __init__(self, forward_ms: float, chunk: int) -> None:
        self.forward_s = forward_ms / 1000.0
        self.chunk = chunk

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obs, dict):
            raise TypeError(f"observation must be a map, got {type(obs).__name__}")
        if self.forward_s:
            time.sleep(self.forward_s)
        return {"actions": np.zeros((self.chunk, ACTION_DIM), dtype=np.float32)}


class OpenpiStyleServer:
    """One websocket server, one handler per connection (see the module docstring)."""

    def __init__(self, policy: FlatCostPolicy, host: str, port: int, metadata: dict[str, Any]) -> None:
        self._policy = policy
        self._host = host
        self._port = port
        self._metadata = metadata

    async def run(self) -> None:
        from websockets.asyncio.server import serve

        async with serve(
            self._handler, self._host, self._port, compression=None, max_size=None, process_request=_healthz
        ) as server:
            await server.serve_forever()

    async def _handler(self, websocket: Any) -> None:
        import websockets
        from openpi_client import msgpack_numpy

        packer = msgpack_numpy.Packer()
        await websocket.send(packer.pack(self._metadata))
        prev_total_s: float | None = None
        while True:
            try:
                started = time.monotonic()
                obs = msgpack_numpy.unpackb(await websocket.recv())
                infer_started = time.monotonic()
                action = self._policy.infer(obs)
                infer_s = time.monotonic() - infer_started
                action["server_timing"] = {"infer_ms": infer_s * 1000.0}
                if prev_total_s is not None:
                    action["server_timing"]["prev_total_ms"] = prev_total_s * 1000.0
                await websocket.send(packer.pack(action))
                prev_total_s = time.monotonic() - started
            except websockets.ConnectionClosed:
                break
            except Exception:
                await websocket.send(traceback.format_exc())
                await websocket.close(code=1011, reason="Internal server error. Traceback included in previous frame.")
                raise


def _healthz(connection: Any, request: Any) -> Any:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="openpi-style websocket policy server (benchmark reimplementation)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--forward-ms", type=float, default=5.0)
    parser.add_argument("--chunk", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    policy = FlatCostPolicy(args.forward_ms, args.chunk)
    metadata = {"server": "openpi-style reimplementation (bench.openpi_server)", "forward_ms": args.forward_ms}
    try:
        asyncio.run(OpenpiStyleServer(policy, args.host, args.port, metadata).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
