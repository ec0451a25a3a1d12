"""Several inference servers behind one client: the health-aware endpoint pool.

``BridgeClient(["tcp://gpu0:5555", "tcp://gpu1:5556"])`` (or one comma-separated string) keeps
one DEALER link per server — a :class:`~bridge.client.BridgeClient` /
:class:`~bridge.aio_client.AsyncBridgeClient` of its own — and this module decides which link
each request takes:

- requests go to the healthy server with the fewest requests in flight from this client (ties
  rotate, so a synchronous client round-robins); a plain DEALER connected to every server would
  round-robin too, but could not skip a server that stopped answering;
- a server that times out (or answers ``model_unavailable``: restarting) is marked down and
  skipped; a background prober sends it ``health`` every ``probe_interval_s`` and brings it
  back once it answers ``ok`` (or ``degraded``); when every server is down, requests still go
  out (to the least loaded), so a lone restarted server is found by traffic too;
- a request that failed that way is retried once on another server when its op is idempotent
  (:data:`RETRY_SAFE_OPS`: ``act``, ``hello``, … — not a stream, not ``cancel``); otherwise, or
  when the retry fails too, the caller gets the error;
- session state sticks: requests naming a ``session`` (``reset``, ``act(session=...)``) go to
  the server that session was first sent to. If that server goes down the session moves to
  another one (its server-side state is gone with the dead server anyway) and a warning says so.

A failover costs the client's ``timeout_s`` for the requests in flight on the dying server;
set it to a few times the slowest expected reply for quick failover.
Torch-free; no sockets here — the links own them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bridge.errors import BridgeError, BridgeTimeout
from bridge.protocol import (
    OP_ACT,
    OP_CAPTION,
    OP_DETECT,
    OP_HEALTH,
    OP_HELLO,
    OP_POINT,
    OP_QUERY,
    OP_RESET,
    OP_STATS,
    ErrorCode,
)

logger = logging.getLogger(__name__)

# non-streaming requests whose repetition on another server changes nothing but the answer's timing
RETRY_SAFE_OPS = frozenset({OP_ACT, OP_HELLO, OP_HEALTH, OP_STATS, OP_RESET, OP_CAPTION, OP_QUERY, OP_DETECT,
                            OP_POINT})
# error replies that mean "this server cannot serve now", as opposed to "this request is bad"
_SERVER_DOWN_CODES = frozenset({ErrorCode.MODEL_UNAVAILABLE})
_HEALTHY_STATUSES = ("ok", "degraded")
_MAX_SESSIONS = 100_000  # pinned sessions remembered (least recently used forgotten first)

T = TypeVar("T")
L = TypeVar("L")


def endpoint_list(endpoint: str | Sequence[str]) -> tuple[str, ...]:
    """``"tcp://a:1,tcp://b:2"`` or ``["tcp://a:1", "tcp://b:2"]`` -> a tuple, checked."""
    items = endpoint.split(",") if isinstance(endpoint, str) else list(endpoint)
    endpoints = tuple(e.strip() for e in items if isinstance(e, str) and e.strip())
    if not endpoints or len(endpoints) != len(items):
        raise ValueError(f"expected one or more endpoints, got {endpoint!r}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"duplicate endpoint in {endpoint!r}")
    return endpoints


def is_server_failure(exc: BaseException) -> bool:
    """True for failures that say the server (not the request) is the problem."""
    return isinstance(exc, BridgeTimeout) or (isinstance(exc, BridgeError) and exc.code in _SERVER_DOWN_CODES)


@dataclass(frozen=True)
class PoolPolicy:
    probe_interval_s: float = 0.5  # how often a down server is sent ``health``
    probe_timeout_s: float = 1.0  # how long a probe waits for the answer

    def __post_init__(self) -> None:
        if self.probe_interval_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("probe_interval_s and probe_timeout_s must be > 0")


@dataclass
class _EndpointState:
    healthy: bool = True
    in_flight: int = 0
    down_since: float | None = None
    failovers: int = 0  # times this server was marked down


class EndpointPool:
    """Which server the next request goes to; thread-safe. Holds no sockets."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = tuple(endpoints)
        self._state = {ep: _EndpointState() for ep in self.endpoints}
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._rotation = itertools.count()
        self._lock = threading.Lock()

    def pick(self, session: str | None = None, exclude: frozenset[str] = frozenset()) -> str | None:
        """The endpoint for the next request (None when ``exclude`` leaves nothing)."""
        with self._lock:
            allowed = [ep for ep in self.endpoints if ep not in exclude]
            healthy = [ep for ep in allowed if self._state[ep].healthy]
            if session is not None:
                pinned = self._sessions.get(session)
                if pinned is not None and pinned in healthy:
                    self._sessions.move_to_end(session)
                    return pinned
            candidates = healthy or allowed  # all down: still try, the request is a probe too
            if not candidates:
                return None
            start = next(self._rotation) % len(candidates)
            rotated = candidates[start:] + candidates[:start]
            chosen = min(rotated, key=lambda ep: self._state[ep].in_flight)
            if session is not None:
                previous = self._sessions.get(session)
                if previous is not None and previous != chosen:
                    logger.warning("session %r moves from %s (down) to %s; its server-side state is lost",
                                   session, previous, chosen)
                self._sessions[session] = chosen
                self._sessions.move_to_end(session)
                while len(self._sessions) > _MAX_SESSIONS:
                    self._sessions.popitem(last=False)
            return chosen

    def begin(self, endpoint: str) -> None:
        with self._lock:
            self._state[endpoint].in_flight += 1

    def end(self, endpoint: str) -> None:
        with self._lock:
            self._state[endpoint].in_flight -= 1

    def mark_down(self, endpoint: str, reason: object) -> None:
        with self._lock:
            state = self._state[endpoint]
            if not state.healthy:
                return
            state.healthy, state.down_since = False, time.monotonic()
            state.failovers += 1
        logger.warning("server %s marked down (%s); requests go to the others until it answers health", endpoint,
                       reason)

    def after_failure(self, op: str, endpoint: str, exc: BridgeError, tried: frozenset[str]) -> frozenset[str]:
        """Called from ``except BridgeError``: a server failure marks ``endpoint`` down and returns the
        servers tried so far when ``op`` may be retried once elsewhere; otherwise re-raises ``exc``."""
        if not is_server_failure(exc):
            raise exc
        self.mark_down(endpoint, exc)
        tried |= {endpoint}
        if op not in RETRY_SAFE_OPS or len(tried) > 1 or len(tried) == len(self.endpoints):
            raise exc
        logger.info("%s failed on %s (%s); retrying once on another server", op, endpoint, exc.code)
        return tried

    def mark_up(self, endpoint: str) -> None:
        with self._lock:
            state = self._state[endpoint]
            if state.healthy:
                return
            down_s = time.monotonic() - (state.down_since or time.monotonic())
            state.healthy, state.down_since = True, None
        logger.info("server %s is back after %.1f s", endpoint, down_s)

    def healthy(self) -> list[str]:
        with self._lock:
            return [ep for ep in self.endpoints if self._state[ep].healthy]

    def down(self) -> list[str]:
        with self._lock:
            return [ep for ep in self.endpoints if not self._state[ep].healthy]

    def session_endpoint(self, session: str) -> str | None:
        with self._lock:
            return self._sessions.get(session)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: healthy, in_flight, failovers (for logs and ``repr``)."""
        with self._lock:
            return {ep: {"healthy": s.healthy, "in_flight": s.in_flight, "failovers": s.failovers}
                    for ep, s in self._state.items()}


def _session_of(args: Mapping[str, Any] | None) -> str | None:
    session = (args or {}).get("session")
    return session if isinstance(session, str) else None


def _answers_health(result: Any) -> bool:
    return isinstance(result, Mapping) and result.get("status") in _HEALTHY_STATUSES


class EndpointRouter(Generic[L]):
    """Synchronous routing over one link per endpoint (links: :class:`bridge.client.BridgeClient`).

    ``make_probe(endpoint)`` builds the prober thread's own client of that endpoint (a socket
    belongs to one thread); its ``health(timeout_s=...)`` and ``close()`` are used.
    """

    def __init__(self, links: Mapping[str, L], make_probe: Callable[[str], Any],
                 policy: PoolPolicy = PoolPolicy()) -> None:
        self.links = dict(links)
        self.pool = EndpointPool(list(self.links))
        self.policy = policy
        self._make_probe = make_probe
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe_loop, name="vtla-endpoint-prober", daemon=True)
        self._prober.start()

    def run(self, op: str, args: Mapping[str, Any] | None, send: Callable[[L], T]) -> T:
        """``send(link)`` on the chosen server; once more elsewhere if that server failed and ``op`` is safe."""
        session = _session_of(args)
        tried: frozenset[str] = frozenset()
        while True:
            endpoint = self.pool.pick(session, tried)
            if endpoint is None:
                raise AssertionError("unreachable: the first pick always has a candidate")
            self.pool.begin(endpoint)
            try:
                return send(self.links[endpoint])
            except BridgeError as exc:
                tried = self.pool.after_failure(op, endpoint, exc, tried)  # re-raises unless a retry is due
            finally:
                self.pool.end(endpoint)

    def broadcast(self, send: Callable[[L], T]) -> list[T]:
        """``send(link)`` on every healthy server (``cancel``: the id may be on any of them)."""
        results: list[T] = []
        for endpoint in self.pool.healthy() or list(self.links):
            try:
                results.append(send(self.links[endpoint]))
            except BridgeError as exc:
                if not is_server_failure(exc):
                    raise
                self.pool.mark_down(endpoint, exc)
        return results

    def stream(self, args: Mapping[str, Any] | None,
               open_stream: Callable[[L], Generator[T, None, None]]) -> Generator[T, None, None]:
        """A stream on one server, never retried (chunks already delivered cannot be taken back)."""
        endpoint = self.pool.pick(_session_of(args))
        assert endpoint is not None
        self.pool.begin(endpoint)
        events = open_stream(self.links[endpoint])
        try:
            yield from events
        except BridgeError as exc:
            if is_server_failure(exc):
                self.pool.mark_down(endpoint, exc)
            raise
        finally:
            events.close()
            self.pool.end(endpoint)

    def _probe_loop(self) -> None:
        probes: dict[str, Any] = {}
        try:
            while not self._stop.wait(self.policy.probe_interval_s):
                for endpoint in self.pool.down():
                    probe = probes.get(endpoint)
                    if probe is None:
                        probe = probes[endpoint] = self._make_probe(endpoint)
                    try:
                        if _answers_health(probe.health(timeout_s=self.policy.probe_timeout_s)):
                            self.pool.mark_up(endpoint)
                    except BridgeError as exc:
                        logger.debug("probe of %s: %s", endpoint, exc)
        finally:
            for probe in probes.values():
                probe.close()

    def close(self) -> None:
        self._stop.set()
        self._prober.join(self.policy.probe_interval_s + self.policy.probe_timeout_s + 1.0)


class AsyncEndpointRouter(Generic[L]):
    """The asyncio counterpart (links: :class:`bridge.aio_client.AsyncBridgeClient`); probes with the links."""

    def __init__(self, links: Mapping[str, L], policy: PoolPolicy = PoolPolicy()) -> None:
        self.links = dict(links)
        self.pool = EndpointPool(list(self.links))
        self.policy = policy
        self._prober: asyncio.Task[None] | None = None

    def _ensure_prober(self) -> None:
        if self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop())

    async def run(self, op: str, args: Mapping[str, Any] | None, send: Callable[[L], Awaitable[T]]) -> T:
        self._ensure_prober()
        session = _session_of(args)
        tried: frozenset[str] = frozenset()
        while True:
            endpoint = self.pool.pick(session, tried)
            assert endpoint is not None
            self.pool.begin(endpoint)
            try:
                return await send(self.links[endpoint])
            except BridgeError as exc:
                tried = self.pool.after_failure(op, endpoint, exc, tried)  # re-raises unless a retry is due
            finally:
                self.pool.end(endpoint)

    async def broadcast(self, send: Callable[[L], Awaitable[T]]) -> list[T]:
        results: list[T] = []
        for endpoint in self.pool.healthy() or list(self.links):
            try:
                results.append(await send(self.links[endpoint]))
            except BridgeError as exc:
                if not is_server_failure(exc):
                    raise
                self.pool.mark_down(endpoint, exc)
        return results

    async def stream(self, args: Mapping[str, Any] | None,
                     open_stream: Callable[[L], AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
        self._ensure_prober()
        endpoint = self.pool.pick(_session_of(args))
        assert endpoint is not None
        self.pool.begin(endpoint)
        events = open_stream(self.links[endpoint])
        try:
            async for event in events:
                yield event
        except BridgeError as exc:
            if is_server_failure(exc):
                self.pool.mark_down(endpoint, exc)
            raise
        finally:
            await events.aclose()
            self.pool.end(endpoint)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.probe_interval_s)
            for endpoint in self.pool.down():
                link: Any = self.links[endpoint]
                try:
                    if _answers_health(await link.health(timeout_s=self.policy.probe_timeout_s)):
                        self.pool.mark_up(endpoint)
                except BridgeError as exc:
                    logger.debug("probe of %s: %s", endpoint, exc)

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            try:
                await self._prober
            except asyncio.CancelledError:
                pass
            self._prober = None
