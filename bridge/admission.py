"""Admission: who a client is, and how much of the server's queue it may hold.

A client is the peer whose routing id the ROUTER socket put in front of its message
(``envelope[0]``): ZeroMQ assigns it per connection, and a client cannot change it per message.
Every further envelope frame was written by the peer itself, so it only counts as identity when
that peer is a **trusted proxy** (``server.trusted_proxies``, by the routing id the proxy's
DEALER sets): behind an untrusted proxy, limits apply to the proxy as a whole.

Limits are in requests (all clients; per client, with per-identity ``inflight_allowances``, e.g.
for the HTTP companion that carries many callers) and in bytes of admitted, unanswered messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridge.config import ServerConfig
from bridge.protocol import ErrorCode, ProtocolError

ClientKey = tuple[bytes, ...]


@dataclass(frozen=True)
class AdmissionLimits:
    max_inflight: int
    max_inflight_per_client: int
    max_inflight_bytes: int
    trusted_proxies: frozenset[bytes] = frozenset()
    allowances: Mapping[bytes, int] = field(default_factory=dict)  # routing id -> per-client limit

    @classmethod
    def from_config(cls, server: ServerConfig) -> AdmissionLimits:
        """The ``[server]`` limits, with routing ids as the bytes the ROUTER sees."""
        return cls(
            max_inflight=server.max_inflight,
            max_inflight_per_client=server.max_inflight_per_client,
            max_inflight_bytes=server.max_inflight_bytes,
            trusted_proxies=frozenset(p.encode() for p in server.trusted_proxies),
            allowances={identity.encode(): int(n) for identity, n in server.inflight_allowances.items()},
        )


def client_key(envelope: Sequence[bytes], trusted_proxies: frozenset[bytes]) -> ClientKey:
    """The identity admission counts against: the peer, or through trusted proxies the frame
    each of them added (a chain of trusted proxies is followed hop by hop)."""
    hops = 1
    while hops < len(envelope) and envelope[hops - 1] in trusted_proxies:
        hops += 1
    return tuple(envelope[:hops])


class Admission:
    """Counters of admitted, unanswered work. Used by the I/O thread only (no locking)."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._count: dict[ClientKey, int] = {}  # (plain dicts: a Counter's missing key is a Python call)
        self._bytes: dict[ClientKey, int] = {}
        self.total = 0
        self.total_bytes = 0
        self.refused = 0

    def client(self, envelope: Sequence[bytes]) -> ClientKey:
        return client_key(envelope, self.limits.trusted_proxies)

    def per_client_limit(self, client: ClientKey) -> int:
        """An allowance named ``x`` applies to the routing id ``x`` and to ``x/<anything>``."""
        identity = client[-1]
        for name, allowance in self.limits.allowances.items():
            if identity == name or identity.startswith(name + b"/"):
                return allowance
        return self.limits.max_inflight_per_client

    def admit(self, client: ClientKey, nbytes: int) -> None:
        """Count one request of ``nbytes``, or raise ``overloaded`` without counting it."""
        limits = self.limits
        if self.total >= limits.max_inflight:
            self._refuse(f"server queue is full ({self.total} requests)")
        if self.total > 0 and self.total_bytes + nbytes > limits.max_inflight_bytes:
            self._refuse(
                f"server queue is full ({self.total_bytes} bytes in flight, limit {limits.max_inflight_bytes})"
            )
        per_client = self.per_client_limit(client)
        count = self._count.get(client, 0)
        if count >= per_client:
            self._refuse(f"this client has {count} requests in flight, limit {per_client}")
        self.total += 1
        self.total_bytes += nbytes
        self._count[client] = count + 1
        self._bytes[client] = self._bytes.get(client, 0) + nbytes

    def release(self, client: ClientKey, nbytes: int) -> None:
        self.total -= 1
        self.total_bytes -= nbytes
        count = self._count.get(client, 0) - 1
        if count <= 0:
            self._count.pop(client, None)
            self._bytes.pop(client, None)
        else:
            self._count[client] = count
            self._bytes[client] -= nbytes

    def _refuse(self, message: str) -> None:
        self.refused += 1
        raise ProtocolError(ErrorCode.OVERLOADED, message)
