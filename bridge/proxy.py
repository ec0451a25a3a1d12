"""``vtla-bridge proxy --frontend EP --backend EP[,EP...]``: one address in front of several servers.

For clients that can know only one address (a REQ socket in another language, a simulator
config with one field). Built on libzmq's own proxy device (``zmq.proxy_steerable``): a ROUTER
bound on the frontend, a DEALER connected to every backend. The protocol's envelopes make this
work unchanged — the server answers with the envelope it received, which now carries the
proxy's routing identity too.

Limits, by design of libzmq's DEALER:

- **round-robin, not load-aware**: request *k* goes to the next connected backend whatever its
  queue; a slow or busy server gets the same share as an idle one;
- a backend is skipped only once its TCP connection is gone (``ZMQ_IMMEDIATE``; heartbeats,
  ``--heartbeat-s``, notice a peer that vanished without closing its connection) — a server
  that is connected but hung keeps receiving its share;
- requests in flight on a backend that dies are lost: their clients time out (the client
  library then retries an idempotent request, see :mod:`bridge.endpoints`); nothing is retried
  by the proxy;
- no sessions: consecutive requests of one client may land on different servers.

Clients that can take a list of endpoints (``BridgeClient([...])``) do better: least-in-flight
routing, health probes, one retry elsewhere, sticky sessions.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import zmq

from bridge.endpoints import endpoint_list
from bridge.log_setup import configure_logging

logger = logging.getLogger(__name__)

_TERMINATE = b"TERMINATE"


def _wildcard_port(endpoint: str) -> str:
    """``tcp://host:0`` -> ``tcp://host:*`` (libzmq's spelling of "any free port")."""
    return endpoint[:-2] + ":*" if endpoint.startswith("tcp://") and endpoint.endswith(":0") else endpoint


class ZmqProxy:
    """The ROUTER/DEALER device in a thread of its own; ``stop()`` ends it through its control socket."""

    def __init__(self, frontend: str, backends: Sequence[str], *, heartbeat_s: float = 2.0,
                 context: zmq.Context[Any] | None = None) -> None:
        if not backends:
            raise ValueError("at least one backend endpoint is needed")
        self._context = context or zmq.Context.instance()
        self.backends = tuple(backends)
        self._front = self._context.socket(zmq.ROUTER)
        self._front.setsockopt(zmq.LINGER, 0)
        self._front.bind(_wildcard_port(frontend))
        self.frontend: str = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self._back = self._context.socket(zmq.DEALER)
        self._back.setsockopt(zmq.LINGER, 0)
        self._back.setsockopt(zmq.IMMEDIATE, 1)  # queue only to backends that are connected now
        if heartbeat_s > 0:
            ivl_ms = max(1, int(heartbeat_s * 1000))
            self._back.setsockopt(zmq.HEARTBEAT_IVL, ivl_ms)
            self._back.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl_ms)
        for backend in self.backends:
            self._back.connect(backend)
        control_endpoint = f"inproc://vtla-proxy-control-{uuid.uuid4().hex}"  # unique: closing unbinds lazily
        self._control = self._context.socket(zmq.PAIR)
        self._control.bind(control_endpoint)
        self._command = self._context.socket(zmq.PAIR)
        self._command.connect(control_endpoint)
        self._thread = threading.Thread(target=self._run, name="vtla-zmq-proxy", daemon=True)

    def start(self) -> ZmqProxy:
        self._thread.start()
        logger.info("proxy %s -> %s (round-robin)", self.frontend, ", ".join(self.backends))
        return self

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._front, self._back, None, self._control)
        except zmq.ContextTerminated:  # pragma: no cover - the context went first
            pass
        finally:
            for sock in (self._front, self._back, self._control):
                sock.close(linger=0)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self._command.send(_TERMINATE)
            self._thread.join(timeout_s)
        self._command.close(linger=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtla-bridge proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--frontend", required=True, help="endpoint clients connect to, e.g. tcp://0.0.0.0:5555 "
                        "(tcp://HOST:0 or :* picks a free port; the bound endpoint is printed)")
    parser.add_argument("--backend", required=True, help="inference servers, comma-separated: tcp://h1:5556,...")
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="ZMTP heartbeat to the backends; a silent one is dropped after 3 intervals (0: off)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        backends = endpoint_list(args.backend)
        proxy = ZmqProxy(args.frontend, backends, heartbeat_s=args.heartbeat_s).start()
    except (ValueError, zmq.ZMQError) as exc:
        print(f"vtla-bridge proxy: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"vtla-bridge proxy: frontend {proxy.frontend} -> {len(backends)} backend(s) {', '.join(backends)} "
          "(round-robin, not load-aware)", file=sys.stderr, flush=True)
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
