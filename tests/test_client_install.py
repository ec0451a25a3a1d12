"""The client side installs as one: `pip install .` into a fresh venv brings no torch, and that venv
drives a real simulator in closed loop against a server running in another environment.

Slow (a fresh venv, a real pip install from the package index): marked ``slow``; CI runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from bridge.client import BridgeClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "safetensors", "tokenizers", "nvidia-cudnn-cu12", "triton"}


def free_tcp_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Outside this environment: no PYTHONPATH into the repo, no constraints meant for the server side."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "VIRTUAL_ENV")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-venv")
    venv.EnvBuilder(with_pip=True).create(root)
    py = str(root / "bin" / "python")
    # the client side of the project, plus the one simulator this test drives
    done = run([py, "-m", "pip", "install", "-q", str(REPO), "mujoco==3.3.7"], timeout=800)
    assert done.returncode == 0, done.stderr[-4000:]
    return root


def test_client_install_has_no_torch(client_venv: Path) -> None:
    listed = run([str(client_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"], timeout=120)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "vtla-bridge" in names and "pyzmq" in names
    assert not names & HEAVY, f"the client install pulled in {sorted(names & HEAVY)}"
    serve = run([str(client_venv / "bin" / "vtla-bridge"), "serve"], timeout=120)
    assert serve.returncode == 2 and "vtla-bridge[server]" in serve.stderr  # says what to install


def test_client_venv_runs_a_simulator_against_a_server_in_another_env(client_venv: Path, tmp_path: Path) -> None:
    endpoint = free_tcp_endpoint()
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", "configs/touch-expert.toml", "--bind", endpoint],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        with BridgeClient(endpoint, timeout_s=60) as client:
            deadline_s = time.monotonic() + 120
            while client.health()["status"] == "loading" and time.monotonic() < deadline_s:
                time.sleep(0.5)
            assert client.health()["status"] == "ok"
        summary = tmp_path / "summary.json"
        done = run(
            [str(client_venv / "bin" / "vtla-bridge"), "run-sim", "touch", "--task", "lift", "--episodes", "1",
             "--server", endpoint, "--rate-hz", "0", "--json", str(summary)],
            timeout=600, cwd=str(tmp_path),
        )
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(summary.read_text())
        assert result["episodes"] == 1 and result["success_rate"] == 1.0
    finally:
        server.terminate()
        server.wait(30)
