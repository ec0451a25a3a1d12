"""``vtla-bridge openpi``: run the openpi websocket policy endpoint in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from bridge.config import ConfigError, load_config, with_environment
from bridge.exposure import host_is_loopback, warn_if_exposed
from bridge.log_setup import configure_logging
from bridge.openpi.app import create_app
from bridge.openpi.settings import settings_from_config

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtla-bridge openpi",
        description="serve openpi's websocket policy protocol (openpi-client's WebsocketClientPolicy)",
    )
    parser.add_argument("--config", help="TOML config (default: built-in defaults)")
    parser.add_argument("--server", help="inference server endpoint (default: [openpi] server, else [server] bind)")
    parser.add_argument("--host", help="address to listen on (default: [openpi] host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: [openpi] port)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = with_environment(load_config(args.config), os.environ)  # VTLA_BRIDGE_TOKENS for the server
        settings = settings_from_config(config, server=args.server, host=args.host, port=args.port, env=os.environ)
    except (ConfigError, ValueError) as exc:
        print(f"vtla-bridge openpi: {exc}", file=sys.stderr)
        return 2
    warn_if_exposed(logger, "the openpi endpoint", f"ws://{settings.host}:{settings.port}",
                    host_is_loopback(settings.host), bool(settings.api_keys))
    auth = "on" if settings.api_keys else "off"
    print(f"vtla-bridge openpi: ws://{settings.host}:{settings.port}  (inference server {settings.server_endpoint},"
          f" mapping {settings.mapping.name!r}, Api-Key auth {auth})", file=sys.stderr, flush=True)
    try:
        web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None, access_log=None,
                    shutdown_timeout=5.0)
    except OSError as exc:
        print(f"vtla-bridge openpi: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
