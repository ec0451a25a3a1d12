"""``vtla-bridge http``: run the HTTP companion in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from bridge.config import ConfigError, load_config, with_environment
from bridge.exposure import host_is_loopback, warn_if_exposed
from bridge.http.app import create_app
from bridge.http.settings import settings_from_config
from bridge.log_setup import configure_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtla-bridge http", description="run the HTTP companion (aiohttp)")
    parser.add_argument("--config", help="TOML config (default: built-in defaults)")
    parser.add_argument("--server", help="inference server endpoint (default: [http] server, else [server] bind)")
    parser.add_argument("--host", help="address to listen on (default: [http] host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: [http] port)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = with_environment(load_config(args.config), os.environ)
        settings = settings_from_config(config, os.environ, server=args.server, host=args.host, port=args.port)
    except (ConfigError, ValueError) as exc:
        print(f"vtla-bridge http: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    warn_if_exposed(logger, "the HTTP companion", f"http://{settings.host}:{settings.port}",
                    host_is_loopback(settings.host), bool(settings.api_keys))
    auth = "on" if settings.api_keys else "off"
    print(f"vtla-bridge http: http://{settings.host}:{settings.port}  (inference server {settings.server_endpoint},"
          f" /v1 API keys {auth})", file=sys.stderr, flush=True)
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                    shutdown_timeout=5.0)
    except OSError as exc:
        print(f"vtla-bridge http: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
