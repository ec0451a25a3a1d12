"""Container health checks: ``python -m bridge.healthcheck ENDPOINT`` exits 0 when healthy.

    python -m bridge.healthcheck tcp://127.0.0.1:5555      # the inference server's `health` is "ok"
    python -m bridge.healthcheck http://127.0.0.1:8000     # the companion's GET /health answers 200
    python -m bridge.healthcheck http://127.0.0.1:8001/healthz  # a URL with a path: that path (openpi)

The token for a server with ``auth_tokens`` comes from ``VTLA_BRIDGE_TOKENS`` (the first one), as
in compose.yaml. Torch-free; prints one line saying why when unhealthy.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from bridge.client import BridgeClient
from bridge.config import SERVER_TOKENS_ENV
from bridge.errors import BridgeError


def check_server(endpoint: str, timeout_s: float, token: str | None) -> tuple[bool, str]:
    with BridgeClient(endpoint, timeout_s=timeout_s, auth=token) as client:
        try:
            status = client.health()["status"]
        except BridgeError as exc:
            return False, f"{endpoint}: {exc}"
    return status == "ok", f"{endpoint}: status {status}"


def health_url(url: str) -> str:
    """A bare ``http://host:port`` means the companion's ``/health``; a URL with a path is used as is."""
    return url if urllib.parse.urlsplit(url).path.strip("/") else url.rstrip("/") + "/health"


def check_http(url: str, timeout_s: float) -> tuple[bool, str]:
    url = health_url(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, f"{url}: HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("endpoint", help="tcp://HOST:PORT (inference server) or http://HOST:PORT (companion)")
    parser.add_argument("--timeout-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.endpoint.startswith(("http://", "https://")):
        healthy, why = check_http(args.endpoint, args.timeout_s)
    else:
        tokens = [t.strip() for t in os.environ.get(SERVER_TOKENS_ENV, "").split(",") if t.strip()]
        healthy, why = check_server(args.endpoint, args.timeout_s, tokens[0] if tokens else None)
    print(("healthy: " if healthy else "unhealthy: ") + why, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
