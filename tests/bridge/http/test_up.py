"""``vtla-bridge up`` as users run it: the predecessor's own client snippet, the official ``moondream``
client from PyPI, supervision (a killed child comes back) and a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.bridge.http.conftest import FAST, free_port, image_bytes

REPO_ROOT = Path(__file__).resolve().parents[3]
API_KEY = "test-key-123"


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    zmq_port: int
    log_path: Path
    openpi_port: int


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url}/health not 200 within {timeout_s} s")


@pytest.fixture(scope="module")
def up(artifacts_dir: Path) -> Iterator[Up]:
    port, zmq_port, openpi_port = free_port(), free_port(), free_port()
    log_path = artifacts_dir / "vtla-bridge-up.log"
    env = {**os.environ, "VLM_API_KEY": API_KEY, "VTLA_LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "up", "--bind", f"tcp://127.0.0.1:{zmq_port}", "--port", str(port),
             "--openpi-port", str(openpi_port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    handle = Up(process, f"http://127.0.0.1:{port}", port, zmq_port, log_path, openpi_port)
    try:
        wait_healthy(handle.url, timeout_s=180)
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_predecessor_client_snippet(up: Up, tmp_path: Path) -> None:
    path = tmp_path / "robot_view.png"
    path.write_bytes(image_bytes(640, 480))
    url = up.url
    # --- the predecessor's documented client, unchanged ---
    response = requests.post(url + "/predict", files={"image": open(path, "rb")},
                             data={"instruction": "Pick up the red block", "use_dummy_tactile": True})
    action = response.json()["action"]
    dx, dy, dz = action[0:3]
    droll, dpitch, dyaw = action[3:6]
    gripper = action[6]
    # ---
    assert response.status_code == 200
    assert all(isinstance(v, float) for v in (dx, dy, dz, droll, dpitch, dyaw, gripper))
    assert response.json()["metadata"]["image_size"] == [640, 480]
    assert requests.get(url + "/stats").json()["description"]["6"] == "gripper (0=open, 1=closed)"
    assert requests.get(url + "/health").json()["status"] == "healthy"


def test_official_moondream_client(up: Up) -> None:
    md = pytest.importorskip("moondream")
    model = md.vl(endpoint=f"{up.url}/v1", api_key=API_KEY)
    image = Image.open(__import__("io").BytesIO(image_bytes()))

    caption = model.caption(image, length="short", settings=FAST)["caption"]
    assert isinstance(caption, str)
    streamed = "".join(model.caption(image, length="short", stream=True, settings=FAST)["caption"])
    assert streamed == caption  # greedy decoding: same text either way
    answer = model.query(image, "What colour is the square?", settings=FAST)["answer"]
    assert isinstance(answer, str)
    assert "".join(model.query(image, "What colour is the square?", stream=True, settings=FAST)["answer"]) == answer
    objects = model.detect(image, "red square", settings=FAST)["objects"]
    assert isinstance(objects, list) and all({"x_min", "y_min", "x_max", "y_max"} <= set(o) for o in objects)
    points = model.point(image, "red square", settings=FAST)["points"]
    assert isinstance(points, list) and all({"x", "y"} <= set(p) for p in points)

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        md.vl(endpoint=f"{up.url}/v1", api_key="wrong").caption(image, settings=FAST)
    assert excinfo.value.code == 401


def _child_pids(parent: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is ``parent`` (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                children[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return children


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_openpi_client_through_up(up: Up) -> None:
    """The default config's openpi endpoint: openpi's own client, unchanged, on [openpi] port."""
    from openpi_client import websocket_client_policy

    health = requests.get(f"http://127.0.0.1:{up.openpi_port}/healthz", timeout=10)
    assert health.status_code == 200 and health.text == "OK\n"
    policy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", up.openpi_port)
    try:
        assert policy.get_server_metadata()["key_mapping"]["name"] == "libero"
        frame = np.asarray(Image.open(__import__("io").BytesIO(image_bytes(224, 224))).convert("RGB"))
        actions = policy.infer({"observation/image": frame, "prompt": "pick up the red block"})["actions"]
        assert actions.dtype == np.float32 and actions.ndim == 2 and actions.shape[1] == 7
    finally:
        policy._ws.close()  # openpi's client has no close()


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find the child processes")
def test_a_killed_child_is_restarted(up: Up) -> None:
    children = _child_pids(up.process.pid)
    http_pids = [pid for pid, cmd in children.items() if " bridge http " in cmd]
    assert len(children) == 3 and len(http_pids) == 1, children  # serve, http, openpi
    os.kill(http_pids[0], signal.SIGKILL)
    wait_healthy(up.url, timeout_s=60)  # restarted by the supervisor; the server kept running
    new_children = _child_pids(up.process.pid)
    assert http_pids[0] not in new_children and len(new_children) == 3
    assert b"restarting" in up.log_path.read_bytes()


def test_ctrl_c_stops_both(up: Up) -> None:
    children = list(_child_pids(up.process.pid)) if Path("/proc").exists() else []
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(40) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    with pytest.raises(requests.ConnectionError):
        requests.get(up.url + "/health", timeout=2)
    with socket.socket() as sock:  # the inference server's port is free again
        sock.bind(("127.0.0.1", up.zmq_port))
    log = up.log_path.read_text(errors="replace")
    assert "inference server  tcp://127.0.0.1:" in log and f"http://127.0.0.1:{up.port}" in log
    assert f"openpi endpoint   ws://127.0.0.1:{up.openpi_port}" in log
    with socket.socket() as sock:  # nothing listens on the openpi port any more (TIME_WAIT may remain)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", up.openpi_port))
        sock.listen()
