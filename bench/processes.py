"""Start and stop the processes a benchmark measures: the inference server and the HTTP companion.

Each runs as its own OS process (``python -m bridge serve`` / ``python -m bridge http``), as in
production, so the client's CPU work and the server's are not interleaved in one interpreter.
Their logs go to files next to the results, for when a run goes wrong.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from bench.lifecycle import StartStop
from bench.toml_writer import write_toml
from bridge.client import BridgeClient
from bridge.errors import BridgeError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
NULL_POLICY_KIND = "bench.null_policy:load"


class ProcessFailed(RuntimeError):
    """A benchmark process exited or did not become ready; the message points at its log."""


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_env(torch_threads: int | None = None) -> dict[str, str]:
    """The parent's environment, the repo on PYTHONPATH, and optionally a torch thread count.

    On a small shared CPU, torch's intra-op threads oversubscribe the cores once client
    processes run too; OpenMP threads then spin-wait on preempted peers and a 5 ms forward can
    take 500 ms. ``torch_threads`` (OMP_NUM_THREADS) pins the server's pool size.
    """
    env = dict(os.environ)
    if torch_threads is not None:
        env["OMP_NUM_THREADS"] = str(torch_threads)
        env["MKL_NUM_THREADS"] = str(torch_threads)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.setdefault("VTLA_LOG_LEVEL", "WARNING")
    return env


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _ChildProcess:
    """A subprocess with its output in a log file; stopped with SIGINT, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path, torch_threads: int | None = None) -> None:
        self.name = name
        self.torch_threads = torch_threads
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=_child_env(self.torch_threads),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _check_alive(self) -> None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            raise ProcessFailed(
                f"{self.name} exited with code {code} before it was ready; log {self.log_path}:\n"
                + _log_tail(self.log_path)
            )

    def _wait_http_ok(self, url: str, ready_timeout_s: float, poll_s: float) -> None:
        """Until GET ``url`` answers 200; ProcessFailed (and the process stopped) past the timeout."""
        deadline = time.monotonic() + ready_timeout_s
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessFailed(f"{self.name} not healthy within {ready_timeout_s:.0f} s; log {self.log_path}")
            time.sleep(poll_s)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop within %.0f s; killing pid %d", self.name, timeout_s, proc.pid
                )
                proc.kill()
                proc.wait(5.0)
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerProcess(_ChildProcess, StartStop):
    """``vtla-bridge serve`` with a config written from ``table`` (TOML sections as nested dicts)."""

    def __init__(
        self, name: str, table: Mapping[str, Any], work_dir: Path, torch_threads: int | None = None
    ) -> None:
        self.port = free_tcp_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.config_path = write_toml(work_dir / f"{name}.toml", table)
        argv = [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--config",
            str(self.config_path),
            "--bind",
            self.endpoint,
        ]
        super().__init__(name, argv, work_dir / f"{name}.log", torch_threads)
        self.health: Mapping[str, Any] = {}
        self.hello: Mapping[str, Any] = {}

    def launch(self) -> ServerProcess:
        logger.info("starting %s on %s", self.name, self.endpoint)
        self._spawn()
        return self

    def start(self, ready_timeout_s: float = 180.0) -> ServerProcess:
        return self.launch().wait_ready(ready_timeout_s)

    def wait_ready(self, ready_timeout_s: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + ready_timeout_s
        with BridgeClient(self.endpoint, timeout_s=1.0) as client:
            while True:
                self._check_alive()
                try:
                    health = client.health(timeout_s=1.0)
                except BridgeError:
                    health = {}
                if health.get("status") == "ok":
                    self.health = health
                    self.hello = client.hello()
                    return self
                if health.get("status") == "degraded":
                    self.stop()
                    raise ProcessFailed(f"{self.name} is degraded: {health}; log {self.log_path}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise ProcessFailed(
                        f"{self.name} not ready within {ready_timeout_s:.0f} s; log {self.log_path}"
                    )
                time.sleep(0.3)


class HttpProcess(_ChildProcess, StartStop):
    """``vtla-bridge http`` in front of ``server_endpoint``."""

    def __init__(self, name: str, server_endpoint: str, work_dir: Path) -> None:
        self.port = free_tcp_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable, "-m", "bridge", "http",
            "--server", server_endpoint, "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        super().__init__(name, argv, work_dir / f"{name}.log")

    def launch(self) -> HttpProcess:
        logger.info("starting %s on %s", self.name, self.base_url)
        self._spawn()
        return self

    def start(self, ready_timeout_s: float = 60.0) -> HttpProcess:
        return self.launch().wait_ready(ready_timeout_s)

    def wait_ready(self, ready_timeout_s: float = 60.0) -> HttpProcess:
        self._wait_http_ok(self.base_url + "/health", ready_timeout_s, 0.3)
        return self


def http_companion_available() -> bool:
    """True when ``bridge.http.serve_http`` exists in this tree (the companion is built in parallel)."""
    return (REPO_ROOT / "bridge" / "http" / "serve_http.py").exists()


def server_table(
    policy: Mapping[str, Any] | None = None,
    vlm: Mapping[str, Any] | None = None,
    batching: Mapping[str, Any] | None = None,
    device: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config table: the tiny VTLA on CPU with the VLM off, unless told otherwise."""
    table: dict[str, Any] = {
        "policy": dict(policy or {"kind": "vtla", "preset": "tiny"}),
        "vlm": dict(vlm or {"enabled": False}),
        "device": dict(device or {"device": "cpu", "dtype": "float32"}),
    }
    if batching:
        table["batching"] = dict(batching)
    if server:
        table["server"] = dict(server)
    return table


def openpi_client_available() -> str | None:
    """Why the openpi-style variant cannot run here, or None when it can."""
    import importlib.util

    for module, package in (("openpi_client", "openpi-client"), ("websockets", "websockets")):
        if importlib.util.find_spec(module) is None:
            return f"pending: {package} is not installed (the 'openpi' extra)"
    return None


class OpenpiStyleServerProcess(_ChildProcess, StartStop):
    """``python -m bench.openpi_server``: openpi's websocket server loop, reimplemented, serving a
    policy with a flat ``forward_ms`` per ``infer``; ready when ``GET /healthz`` answers 200."""

    def __init__(self, name: str, work_dir: Path, forward_ms: float, chunk: int = 1) -> None:
        self.port = free_tcp_port()
        argv = [
            sys.executable, "-m", "bench.openpi_server", "--host", "127.0.0.1", "--port", str(self.port),
            "--forward-ms", str(forward_ms), "--chunk", str(chunk),
        ]  # fmt: skip
        super().__init__(name, argv, work_dir / f"{name}.log")

    def launch(self) -> OpenpiStyleServerProcess:
        logger.info("starting %s on port %d", self.name, self.port)
        self._spawn()
        return self

    def start(self, ready_timeout_s: float = 60.0) -> OpenpiStyleServerProcess:
        return self.launch().wait_ready(ready_timeout_s)

    def wait_ready(self, ready_timeout_s: float = 60.0) -> OpenpiStyleServerProcess:
        self._wait_http_ok(f"http://127.0.0.1:{self.port}/healthz", ready_timeout_s, 0.2)
        return self
