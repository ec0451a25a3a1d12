"""``vtla-bridge up``: the inference server, the HTTP companion and (when ``[openpi] enabled``) the
openpi websocket endpoint, started and supervised together.

They run as child processes (``python -m bridge serve`` / ``http`` / ``openpi``) with one config.
Ctrl-C (SIGINT) or SIGTERM is forwarded to all; each gets the server's shutdown grace to finish,
then is killed.

When a child dies on its own, the other one keeps running (the HTTP side answers 503 while the
server is away and recovers when it returns) and the dead one is restarted with exponential
backoff. A child that dies quickly (within ``min_uptime_s`` of its start) ``max_quick_failures``
times in a row is considered broken (bad config, port in use, ...): everything is stopped and
``up`` exits with status 1.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.config import BridgeConfig, ConfigError, load_config, with_overrides
from bridge.http.settings import connect_endpoint
from bridge.log_setup import configure_logging

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SupervisorPolicy:
    poll_interval_s: float = 0.2
    min_uptime_s: float = 10.0  # a child that lived less than this "failed quickly"
    max_quick_failures: int = 3  # quick failures in a row before giving up
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    stop_grace_s: float = 10.0  # after the signal, before SIGKILL


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the supervisor dies without cleaning up (e.g. SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Child:
    """One supervised process: its command, the running Popen, restart bookkeeping."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.quick_failures = 0
        self.restart_at: float | None = None  # monotonic time of the pending restart
        self.restarts = 0

    def start(self) -> None:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        # own process group: the terminal's Ctrl-C reaches only the supervisor, which forwards it once
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True, preexec_fn=preexec)
        self.started_at = time.monotonic()
        self.restart_at = None
        logger.info("%s started (pid %d)", self.name, self.process.pid)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.process is not None
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_bind(bind: str) -> str:
    """A ``tcp://host:*`` (or ``:0``) bind gets a concrete free port, so the HTTP side can connect."""
    if bind.startswith("tcp://") and (bind.endswith(":*") or bind.endswith(":0")):
        host = bind[len("tcp://") :].rpartition(":")[0]
        probe_host = "127.0.0.1" if host in ("*", "0.0.0.0", "") else host
        return f"tcp://{host}:{free_tcp_port(probe_host)}"
    return bind


class Supervisor:
    def __init__(self, children: Sequence[Child], policy: SupervisorPolicy = SupervisorPolicy()) -> None:
        self.children = list(children)
        self.policy = policy
        self.stop_requested = threading.Event()
        self.failed: str | None = None

    def request_stop(self, *_: object) -> None:
        self.stop_requested.set()

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        for child in self.children:
            child.start()
        if on_started is not None:
            on_started()
        while not self.stop_requested.wait(self.policy.poll_interval_s):
            for child in self.children:
                self._check(child)
            if self.failed is not None:
                break
        self.stop_all()
        return 1 if self.failed is not None else 0

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                child.start()
            return
        code = child.poll()
        if code is None:
            if now - child.started_at >= self.policy.min_uptime_s:
                child.quick_failures = 0
            return
        lived_s = now - child.started_at
        child.quick_failures = child.quick_failures + 1 if lived_s < self.policy.min_uptime_s else 0
        if child.quick_failures >= self.policy.max_quick_failures:
            self.failed = f"{child.name} exited (status {code}) {child.quick_failures} times within " \
                          f"{self.policy.min_uptime_s:g} s of starting; giving up"
            logger.error("%s", self.failed)
            return
        delay_s = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** max(0, child.quick_failures - 1))
        logger.warning("%s exited with status %s after %.1f s; restarting in %.1f s", child.name, code, lived_s,
                       delay_s)
        child.restart_at = now + delay_s

    def stop_all(self) -> None:
        for child in self.children:
            child.restart_at = None
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.policy.stop_grace_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", child.name, self.policy.stop_grace_s)
                child.process.kill()
                child.process.wait()
            logger.info("%s stopped (status %s)", child.name, child.process.returncode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtla-bridge up", description="start the inference server, the HTTP companion and the openpi endpoint"
    )
    parser.add_argument("--config", help="TOML config for both (default: built-in defaults)")
    parser.add_argument("--bind", help="inference server endpoint (default: [server] bind; tcp://HOST:* picks a port)")
    parser.add_argument("--host", help="HTTP address (default: [http] host)")
    parser.add_argument("--port", type=int, help="HTTP port (default: [http] port)")
    parser.add_argument("--openpi-port", type=int, help="openpi websocket port (default: [openpi] port)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    return parser


def child_commands(args: argparse.Namespace, config: BridgeConfig, bind: str) -> tuple[list[str], list[str]]:
    common = [*(["--config", args.config] if args.config else []), "--log-level", str(args.log_level)]
    serve = [sys.executable, "-m", "bridge", "serve", "--bind", bind, *common]
    http = [sys.executable, "-m", "bridge", "http", "--server", config.http.server or connect_endpoint(bind),
            "--host", args.host or config.http.host, "--port", str(args.port or config.http.port), *common]
    return serve, http


def openpi_command(args: argparse.Namespace, config: BridgeConfig, bind: str) -> list[str] | None:
    """The openpi endpoint's command, or None when ``[openpi] enabled = false``."""
    if not config.openpi.enabled:
        return None
    common = [*(["--config", args.config] if args.config else []), "--log-level", str(args.log_level)]
    return [sys.executable, "-m", "bridge", "openpi", "--server", config.openpi.server or connect_endpoint(bind),
            "--port", str(args.openpi_port or config.openpi.port), *common]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        bind = resolve_bind(args.bind or config.server.bind)
        config = with_overrides(config, server={"bind": bind})  # validates the endpoint
        if args.port is not None:
            config = with_overrides(config, http={"port": args.port})
    except ConfigError as exc:
        print(f"vtla-bridge up: {exc}", file=sys.stderr)
        return 2
    serve_argv, http_argv = child_commands(args, config, bind)
    children = [Child("inference server", serve_argv), Child("http companion", http_argv)]
    openpi_argv = openpi_command(args, config, bind)
    if openpi_argv is not None:
        children.append(Child("openpi endpoint", openpi_argv))
    supervisor = Supervisor(children, SupervisorPolicy(stop_grace_s=config.server.shutdown_grace_s + 5.0))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.request_stop)
    http_host = args.host or config.http.host
    http_port = args.port or config.http.port

    openpi_line = ""
    if openpi_argv is not None:
        openpi_port = args.openpi_port or config.openpi.port
        openpi_line = (f"\n  openpi endpoint   ws://{config.openpi.host}:{openpi_port}"
                       f"  (WebsocketClientPolicy, mapping {config.openpi.mapping!r})")

    def banner() -> None:
        print(f"vtla-bridge up:\n  inference server  {bind}\n  HTTP companion    http://{http_host}:{http_port}"
              f"  (web UI /, docs /docs, metrics /metrics){openpi_line}\n  Ctrl-C stops all.",
              file=sys.stderr, flush=True)

    code = supervisor.run(on_started=banner)
    if supervisor.failed:
        print(f"vtla-bridge up: {supervisor.failed}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
