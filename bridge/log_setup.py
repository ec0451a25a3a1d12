"""Logging for the command-line entry points, configured once per process (library code only logs)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Root logging to stderr at ``level`` (a name such as "INFO"; unknown names mean INFO).
    A no-op when the process configured logging already (e.g. ``up`` running a command in-process)."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=LOG_FORMAT, stream=sys.stderr)
