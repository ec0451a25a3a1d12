"""The openpi endpoint driven by the real openpi-client (WebsocketClientPolicy, ActionChunkBroker)
against real inference servers: the tiny VTLA and the scripted Lift expert."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client
from openpi_client import action_chunk_broker, msgpack_numpy, websocket_client_policy

from bridge.client import BridgeClient
from bridge.openpi.connection import UNITS_NOTE
from bridge.server import InferenceServer
from tests.bridge.openpi.conftest import LiveEndpoint, endpoint_for, start_inference
from vtla_contracts.openpi_keys import mapping_from_table, presets
from vtla_contracts.privileged_state import PROPRIO_DIM

# openpi-client 0.1.2 calls websockets' connect() outside a context manager (newer websockets warn)
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
PROPRIO = np.linspace(-0.2, 0.9, PROPRIO_DIM).astype(np.float32)


def connect(live: LiveEndpoint, api_key: str | None = None) -> websocket_client_policy.WebsocketClientPolicy:
    """openpi's client, unchanged (it has no close(): tests close its socket, ``_ws``, themselves)."""
    return websocket_client_policy.WebsocketClientPolicy("127.0.0.1", live.port, api_key=api_key)


def zmq_actions(server: InferenceServer, **act: Any) -> np.ndarray:
    with BridgeClient(server.endpoint, timeout_s=30) as client:
        return np.asarray(client.act(**act).actions)


# ------------------------------------------------------------------ tiny VTLA


def test_infer_with_the_tiny_vtla_equals_the_zeromq_act(tiny_server: InferenceServer,
                                                        tiny_endpoint: LiveEndpoint) -> None:
    policy = connect(tiny_endpoint)
    try:
        first = policy.infer({"observation/image": IMAGE, "prompt": "pick up the red cube"})
        second = policy.infer({"observation/image": IMAGE, "prompt": "pick up the red cube"})
    finally:
        policy._ws.close()
    actions = first["actions"]
    assert isinstance(actions, np.ndarray) and actions.dtype == np.float32 and actions.shape == (4, 7)
    expected = zmq_actions(tiny_server, images={"primary": IMAGE}, instruction="pick up the red cube")
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)  # fp32 CPU, batch 1 both ways
    np.testing.assert_allclose(second["actions"], actions, rtol=1e-5, atol=1e-6)
    timing = first["server_timing"]
    assert "prev_total_ms" not in timing and timing["infer_ms"] >= timing["compute_ms"] > 0
    assert timing["batch_size"] >= 1
    assert second["server_timing"]["prev_total_ms"] >= timing["infer_ms"]  # the first round, send included
    assert set(first) == {"actions", "server_timing", "policy_timing"}  # no (7,) 'action': every array H-first


def test_server_metadata_describes_the_policy_and_the_mapping(tiny_server: InferenceServer,
                                                              tiny_endpoint: LiveEndpoint) -> None:
    policy = connect(tiny_endpoint)
    try:
        meta = policy.get_server_metadata()
    finally:
        policy._ws.close()
    with BridgeClient(tiny_server.endpoint, timeout_s=30) as client:
        hello = client.hello()
    spec = hello["models"]["vtla"]["action"]
    assert meta["policy"] == "vtla" and "vtla" in meta["models"]
    assert meta["chunk_size"] == spec["chunk_size"] == 4 and meta["action_dim"] == 7
    assert meta["action"]["names"] == spec["names"] and meta["action"]["units"] == spec["units"]
    assert meta["units"] == UNITS_NOTE and "own units" in meta["units"]
    assert meta["random_weights"] is True
    assert meta["key_mapping"]["name"] == "libero"
    assert meta["key_mapping"]["keys"]["observation/image"] == "camera:primary"
    assert meta["key_mapping"]["keys"]["observation/state"] == "proprio"


@pytest.mark.parametrize(
    ("obs", "needles"),
    [
        ({"observation/image": IMAGE, "state": np.zeros(8)}, ["'state'", "'libero' key mapping"]),
        ({"observation/image": IMAGE, "observation/state": np.zeros(8)}, ["'observation/state'", "takes no proprio",
                                                                         "hello.models.vtla.proprio"]),
        ({"observation/image": IMAGE, "observation/wrist_image": WRIST}, ["'observation/wrist_image'", "'wrist'",
                                                                          "['primary']"]),
        ({"observation/image": IMAGE.astype(np.float32)}, ["'observation/image'", "uint8"]),
        ({"prompt": "no image"}, ["no camera image", "observation/image"]),
        ({"observation/image": np.zeros((4, 5, 6), np.uint8)}, ["bad_request", "(3, H, W)"]),
    ],
)
def test_bad_observation_is_a_runtime_error_and_the_next_connection_works(
    tiny_endpoint: LiveEndpoint, obs: dict[str, Any], needles: list[str]
) -> None:
    policy = connect(tiny_endpoint)
    with pytest.raises(RuntimeError) as info:
        policy.infer(obs)
    message = str(info.value)
    assert all(needle in message for needle in needles), message
    with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
        policy._ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    again = connect(tiny_endpoint)
    try:
        assert again.infer({"observation/image": IMAGE})["actions"].shape == (4, 7)
    finally:
        again._ws.close()


def test_eight_concurrent_openpi_clients_are_batched_together() -> None:
    server = start_inference(batching={"max_batch": 8, "max_wait_ms": 2000.0})  # a batch fires when 8 wait
    live = endpoint_for(server)
    try:
        policies = [connect(live) for _ in range(8)]
        barrier = threading.Barrier(8)
        replies: list[dict[str, Any]] = [{} for _ in policies]

        def run(i: int) -> None:
            image = np.full((224, 224, 3), 20 * i, np.uint8)
            barrier.wait(10)
            replies[i] = policies[i].infer({"observation/image": image, "prompt": f"client {i}"})

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        batch_sizes = [r["server_timing"]["batch_size"] for r in replies]
        assert max(batch_sizes) > 1, batch_sizes
        for i, reply in enumerate(replies):  # each connection got the actions for its own observation
            image = np.full((224, 224, 3), 20 * i, np.uint8)
            alone = zmq_actions(server, images={"primary": image}, instruction=f"client {i}")
            np.testing.assert_allclose(reply["actions"], alone, rtol=1e-4, atol=1e-5)  # batch 8 vs batch 1
        for policy in policies:
            policy._ws.close()
    finally:
        live.stop()
        server.stop()


def test_healthz_and_plain_get(tiny_endpoint: LiveEndpoint) -> None:
    with urllib.request.urlopen(f"{tiny_endpoint.url}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b"OK\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{tiny_endpoint.url}/", timeout=10)
    assert info.value.code == 426 and b"WebsocketClientPolicy" in info.value.read()


def test_api_key_is_checked_when_configured(tiny_server: InferenceServer) -> None:
    live = endpoint_for(tiny_server, api_keys=("k-secret",))
    try:
        for key in (None, "wrong"):
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(live, api_key=key)
            assert info.value.response.status_code == 401
        policy = connect(live, api_key="k-secret")
        try:
            assert policy.infer({"observation/image": IMAGE})["actions"].shape == (4, 7)
        finally:
            policy._ws.close()
        with urllib.request.urlopen(f"{live.url}/healthz", timeout=10) as response:  # liveness needs no key
            assert response.status == 200
    finally:
        live.stop()


# ------------------------------------------------------------------ scripted expert


@pytest.fixture(scope="module")
def expert_endpoint(expert_server: InferenceServer) -> Iterator[LiveEndpoint]:
    table = {"observation/image": "camera", "observation/state": "proprio", "prompt": "instruction"}
    live = endpoint_for(expert_server, mapping=mapping_from_table("custom", table, "test"))
    yield live
    live.stop()


def test_infer_with_the_scripted_expert_equals_the_zeromq_act(expert_server: InferenceServer,
                                                              expert_endpoint: LiveEndpoint) -> None:
    policy = connect(expert_endpoint)
    try:
        reply = policy.infer({"observation/image": IMAGE, "observation/state": PROPRIO.astype(np.float64),
                              "prompt": "lift the cube"})
        meta = policy.get_server_metadata()
    finally:
        policy._ws.close()
    expected = zmq_actions(expert_server, image=IMAGE, proprio=PROPRIO)
    assert reply["actions"].shape == (4, 7)
    np.testing.assert_allclose(reply["actions"], expected, rtol=1e-6, atol=1e-6)
    assert meta["policy"] == "expert-lift" and meta["key_mapping"]["name"] == "custom"
    assert meta["proprio"]["dim"] == PROPRIO_DIM


def test_action_chunk_broker_over_three_chunks(expert_server: InferenceServer,
                                               expert_endpoint: LiveEndpoint) -> None:
    before = expert_server.loop.state.counters.get("act_requests", 0)
    inner = connect(expert_endpoint)
    broker = action_chunk_broker.ActionChunkBroker(inner, action_horizon=4)
    try:
        steps = []
        for step in range(12):
            state = PROPRIO + np.float32(0.01 * (step // 4))  # a new state for every chunk
            steps.append(broker.infer({"observation/image": IMAGE, "observation/state": state}))
    finally:
        inner._ws.close()
    assert expert_server.loop.state.counters.get("act_requests", 0) - before == 3  # one request per chunk
    for chunk in range(3):
        expected = zmq_actions(expert_server, image=IMAGE, proprio=PROPRIO + np.float32(0.01 * chunk))
        for h in range(4):
            step = steps[4 * chunk + h]
            assert step["actions"].shape == (7,)
            np.testing.assert_allclose(step["actions"], expected[h], rtol=1e-6, atol=1e-6)
            assert step["server_timing"]["batch_size"] >= 1  # non-array fields pass through the broker


@pytest.mark.parametrize("chunk_size", [1, 4, 50])
def test_openpi_unpackb_reads_every_chunk_size(chunk_size: int) -> None:
    server = start_inference(policy={"kind": "expert-lift", "options": {"chunk_size": chunk_size}})
    table = {"observation/image": "camera", "observation/state": "proprio"}
    live = endpoint_for(server, mapping=mapping_from_table("custom", table, "test"))
    try:
        policy = connect(live)
        try:
            reply = policy.infer({"observation/image": IMAGE, "observation/state": PROPRIO})
        finally:
            policy._ws.close()
        assert reply["actions"].shape == (chunk_size, 7) and reply["actions"].dtype == np.float32
        np.testing.assert_allclose(reply["actions"], zmq_actions(server, image=IMAGE, proprio=PROPRIO), atol=1e-6)
    finally:
        live.stop()
        server.stop()


def test_aloha_preset_nested_channels_first_images(expert_server: InferenceServer) -> None:
    live = endpoint_for(expert_server, mapping=presets()["aloha"])
    try:
        policy = connect(live)
        try:
            chw = np.ascontiguousarray(IMAGE.transpose(2, 0, 1))
            reply = policy.infer({"images": {"cam_high": chw}, "state": PROPRIO, "prompt": "lift"})
            with pytest.raises(RuntimeError, match=r"'images.cam_low' maps to camera 'low'"):
                policy.infer({"images": {"cam_high": chw, "cam_low": chw}, "state": PROPRIO})
        finally:
            policy._ws.close()
        np.testing.assert_allclose(reply["actions"], zmq_actions(expert_server, image=IMAGE, proprio=PROPRIO),
                                   atol=1e-6)
    finally:
        live.stop()


def test_droid_preset_concatenates_joint_and_gripper_position(expert_server: InferenceServer) -> None:
    live = endpoint_for(expert_server, mapping=presets()["droid"])
    try:
        policy = connect(live)
        try:
            reply = policy.infer({
                "observation/exterior_image_1_left": IMAGE,
                "observation/joint_position": PROPRIO[:-1].astype(np.float64),
                "observation/gripper_position": PROPRIO[-1:].astype(np.float64),
                "prompt": "lift",
            })
            short = rf"has {PROPRIO_DIM - 1} values, but the served policy 'expert-lift' takes {PROPRIO_DIM}"
            with pytest.raises(RuntimeError, match=short):
                policy.infer({"observation/exterior_image_1_left": IMAGE,
                              "observation/joint_position": PROPRIO[:-1]})
        finally:
            policy._ws.close()
        np.testing.assert_allclose(reply["actions"], zmq_actions(expert_server, image=IMAGE, proprio=PROPRIO),
                                   atol=1e-6)
    finally:
        live.stop()


# ------------------------------------------------------------------ hostile and careless clients


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"\xc1\xc1 not msgpack", "bad_request: header is not valid msgpack"),
        (msgpack_numpy.packb([1, 2, 3]), "must be a map"),
        (msgpack_numpy.packb({"observation/image": {b"__ndarray__": True, b"data": b"x", b"dtype": "|u1",
                                                    b"shape": [2, 2, 3]}}), "needs 12 bytes, got 1"),
        ("a text frame", "binary frames"),
    ],
)
def test_garbage_frames_are_errors_not_crashes(tiny_endpoint: LiveEndpoint, frame: bytes | str, needle: str) -> None:
    with websockets.sync.client.connect(f"ws://127.0.0.1:{tiny_endpoint.port}", compression=None,
                                        max_size=None) as ws:
        assert isinstance(ws.recv(timeout=30), bytes)  # the metadata
        ws.send(frame)
        message = ws.recv(timeout=30)
        assert isinstance(message, str) and needle in message, message
        with pytest.raises(websockets.exceptions.ConnectionClosedError):
            ws.recv(timeout=5)
    again = connect(tiny_endpoint)
    try:
        assert again.infer({"observation/image": IMAGE})["actions"].shape == (4, 7)
    finally:
        again._ws.close()


def test_the_policy_s_own_refusal_reaches_the_client(expert_endpoint: LiveEndpoint) -> None:
    policy = connect(expert_endpoint)
    with pytest.raises(RuntimeError, match=r"bad_request: expert-lift needs 'proprio'"):
        policy.infer({"observation/image": IMAGE})


def test_a_client_that_leaves_mid_request_does_not_hurt_the_next(tiny_endpoint: LiveEndpoint) -> None:
    for _ in range(3):
        with websockets.sync.client.connect(f"ws://127.0.0.1:{tiny_endpoint.port}", compression=None,
                                            max_size=None) as ws:
            ws.recv(timeout=30)
            ws.send(msgpack_numpy.packb({"observation/image": IMAGE}))
        # closed before the reply arrived
    policy = connect(tiny_endpoint)
    try:
        assert policy.infer({"observation/image": IMAGE})["actions"].shape == (4, 7)
    finally:
        policy._ws.close()


def test_a_frame_over_max_message_bytes_closes_with_1009(tiny_server: InferenceServer) -> None:
    live = endpoint_for(tiny_server, max_message_bytes=10_000)
    try:
        policy = connect(live)
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
            policy.infer({"observation/image": IMAGE})  # 150 kB
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        small = connect(live)
        try:
            assert small.infer({"observation/image": IMAGE[:32, :32].copy()})["actions"].shape == (4, 7)
        finally:
            small._ws.close()
    finally:
        live.stop()
