"""Is a listening address reachable from other hosts? Used to warn loudly when it is and no
authentication is configured (the server's tokens/CURVE, the companion's API keys)."""

from __future__ import annotations

import ipaddress
import logging

_LOCAL_NAMES = frozenset(("localhost", "ip6-localhost"))


def host_is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", "0.0.0.0"-like wildcards are addresses; interface or host names: assume exposed


def endpoint_is_local(endpoint: str) -> bool:
    """ipc:// and inproc:// are local; tcp:// is local only on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return host_is_loopback(host)


def warn_if_exposed(logger: logging.Logger, what: str, where: str, local: bool, authenticated: bool) -> bool:
    """Log a WARNING (and return True) for a listener beyond loopback without any authentication."""
    if local or authenticated:
        return False
    logger.warning(
        "!!! %s listens on %s, reachable from other hosts, WITHOUT AUTHENTICATION: anyone who can reach "
        "it can use it. Configure authentication (docs/security.md) "
        "or bind to 127.0.0.1.", what, where,
    )
    return True
