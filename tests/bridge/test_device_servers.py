"""``vtla-bridge serve --devices``: the port scheme, and real supervised servers (on CPU: no GPU here)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.processes import NULL_POLICY_KIND, server_table
from bench.toml_writer import write_toml
from bridge.client import BridgeClient
from bridge.config import ConfigError
from bridge.device_servers import device_endpoints, parse_devices
from bridge.errors import BridgeError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_port_scheme_and_device_lists() -> None:
    assert device_endpoints("tcp://0.0.0.0:5555", 3) == ["tcp://0.0.0.0:5555", "tcp://0.0.0.0:5556",
                                                         "tcp://0.0.0.0:5557"]
    assert device_endpoints("ipc:///tmp/vtla.sock", 2) == ["ipc:///tmp/vtla-0.sock", "ipc:///tmp/vtla-1.sock"]
    free = device_endpoints("tcp://127.0.0.1:*", 2)
    assert len(set(free)) == 2 and all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ep) for ep in free)
    assert parse_devices("all", count_gpus=2) == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda:1, cpu,cpu") == ["cuda:1", "cpu", "cpu"]
    for bad in ("gpu0", "cuda:0,cuda:0", "cuda:x"):
        with pytest.raises(ConfigError):
            parse_devices(bad)
    with pytest.raises(ConfigError):
        parse_devices("all", count_gpus=0)
    with pytest.raises(ConfigError):
        device_endpoints("tcp://h:65535", 2)


def _health(endpoint: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    with BridgeClient(endpoint, timeout_s=1.0) as client:
        while time.monotonic() < deadline:
            try:
                health = client.health()
                if health["status"] == "ok":
                    return dict(health, server=client.hello()["server"])
            except BridgeError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{endpoint} not healthy within {timeout_s} s")


@pytest.mark.slow
def test_serve_devices_starts_one_server_each_and_restarts_a_dead_one(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "null.toml", server_table(policy={"kind": NULL_POLICY_KIND}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--devices", "cpu,cpu", "--config", str(config),
         "--bind", "tcp://127.0.0.1:*", "--log-level", "WARNING", "--min-uptime-s", "1"],
        cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        endpoints: list[str] = []
        deadline = time.monotonic() + 30.0
        while not endpoints and time.monotonic() < deadline:
            match = re.search(r"endpoints (\S+)", proc.stderr.readline())
            if match:
                endpoints = match.group(1).split(",")
        assert len(endpoints) == 2
        first, second = (_health(ep) for ep in endpoints)
        assert first["device"] == second["device"] == "cpu" == first["server"]["device"]
        children = ["pgrep", "-P", str(proc.pid), "-f", "--", f"--bind {endpoints[0]}"]  # the supervisor's own
        victim = int(subprocess.run(children, capture_output=True, text=True, check=True).stdout.split()[0])
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        assert _health(endpoints[1], 5.0)["status"] == "ok"  # the other one never stopped
        revived = _health(endpoints[0], 60.0)  # restarted by the supervisor (1 s backoff)
        assert revived["uptime_s"] < 30.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
