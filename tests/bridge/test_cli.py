"""`vtla-bridge serve` as users run it: banner, random-weights warning, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.client import BridgeClient
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def start_serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--bind", endpoint, *args],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, endpoint


def read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float = 120) -> str:
    assert proc.stderr is not None
    seen = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_default_config_banner_and_clean_stop(sig: signal.Signals) -> None:
    proc, endpoint = start_serve()
    try:
        text = read_until(proc, "Ready for inference")
        assert endpoint in text
        assert "RANDOM WEIGHTS" in text and "device: cpu" in text
        assert "config: built-in defaults" in text
        with BridgeClient(endpoint, timeout_s=30) as client:
            assert client.health()["status"] == "ok"
            assert client.act(image=np.zeros((64, 64, 3), np.uint8), instruction="push").actions.shape[1] == 7
        proc.send_signal(sig)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_config_exits_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[batching]\nmax_batch = -3\n")
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "batching.max_batch: must be > 0" in out.stderr


def test_unknown_model_kind_fails_loudly(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[policy]\nkind = "teleport"\n[vlm]\nenabled = false\n')
    proc, _ = start_serve("--config", str(cfg))
    try:
        assert proc.wait(120) == 1
        assert proc.stderr is not None and "unknown model kind 'teleport'" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0
    for command in ("serve", "http", "up", "run-sim", "convert-vtla", "bench"):
        assert command in out.stdout
