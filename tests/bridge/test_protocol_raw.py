"""The wire contract, exercised by a client written only from docs/protocol.md (tests/bridge/raw.py).

Uses the real tiny VTLA policy behind the server (so ``act`` returns real model output), with the
generator replaced by a test double: Moondream has its own tests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
import zmq
from PIL import Image

from bridge.protocol import RETRYABLE, ErrorCode
from bridge.server import InferenceServer
from tests.bridge.raw import RawDealer, frame_ref, ndarray
from tests.conftest import StartServer, server_config
from tests.doubles import WordGenerator


@pytest.fixture
def raw(start_server: StartServer) -> Iterator[RawDealer]:
    server = start_server(real_policy=True)
    ctx = zmq.Context()
    client = RawDealer(ctx, server.endpoint)
    yield client
    client.close()
    ctx.term()


def req(op: str, rid: object = 1, **extra: object) -> dict:
    return {"v": 1, "id": rid, "op": op, **extra}


def assert_error(reply: dict, code: str, rid: object, needle: str = "") -> None:
    assert reply["ok"] is False, reply
    assert reply["id"] == rid
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["retryable"] is RETRYABLE[code]
    assert needle in reply["error"]["message"], reply["error"]["message"]


def test_hello_describes_the_action_space(raw: RawDealer) -> None:
    reply = raw.request(req("hello", rid="h-1"))
    assert reply["ok"] and reply["id"] == "h-1" and reply["v"] == 1
    result = reply["result"]
    assert result["protocol"] == [1]
    assert {"hello", "health", "stats", "act", "reset"} <= set(result["ops"])
    vtla = result["models"]["vtla"]
    assert vtla["action"]["dim"] == 7
    assert len(vtla["action"]["names"]) == 7
    assert vtla["random_weights"] is True
    assert result["auth"] == "none"
    assert set(reply["timing"]) >= {"queue_ms", "compute_ms", "server_ms", "batch_size"}


def test_act_inline_and_zero_copy_frames_give_the_same_actions(raw: RawDealer) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    inline = raw.request(req("act", args={"image": ndarray(image), "instruction": "pick up the cube"}))
    framed = raw.request(req("act", rid=2, args={"image": frame_ref(image, 0), "instruction": "pick up the cube"}),
                         image.tobytes())
    assert inline["ok"] and framed["ok"], (inline, framed)
    actions = inline["result"]["actions"]
    assert actions.dtype == np.float32 and actions.ndim == 2 and actions.shape[1] == 7
    np.testing.assert_array_equal(inline["result"]["action"], actions[0])
    np.testing.assert_allclose(framed["result"]["actions"], actions, rtol=1e-5, atol=1e-6)
    assert 0.0 <= float(actions[0, 6]) <= 1.0  # gripper in [0 open, 1 closed]
    assert framed["timing"]["batch_size"] >= 1 and framed["timing"]["server_ms"] >= framed["timing"]["compute_ms"]


def test_act_with_jpeg_tactile_and_force_torque(raw: RawDealer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")
    tactile = {"force_torque": ndarray(np.float32([0, 0, 5, 0, 0, 0]))}
    reply = raw.request(req("act", args={"image": {"__image__": "jpeg", "data": buf.getvalue()}, "tactile": tactile}))
    assert reply["ok"], reply
    assert reply["result"]["actions"].shape[1] == 7


def test_health_and_stats(raw: RawDealer) -> None:
    health = raw.request(req("health"))["result"]
    assert health["status"] == "ok"
    assert health["models"]["vtla"]["loaded"] is True
    assert health["device"] == "cpu" and health["cuda_available"] is False
    assert isinstance(health["queue_depth"], int) and health["uptime_s"] > 0
    stats = raw.request(req("stats"))["result"]
    assert len(stats["mean"]) == 7 and len(stats["std"]) == 7
    assert set(stats["description"]) == {"0-2", "3-5", "6"}


def test_reset_succeeds_with_empty_result(raw: RawDealer) -> None:
    reply = raw.request(req("reset", args={"session": "episode-3"}))
    assert reply["ok"] and reply["result"] == {}


def test_unknown_header_keys_are_ignored(raw: RawDealer) -> None:
    assert raw.request(req("health", future_field={"x": 1}))["ok"]


def image_args() -> dict:
    return {"image": ndarray(np.zeros((32, 32, 3), np.uint8))}


@pytest.mark.parametrize(
    ("header", "code", "rid", "needle"),
    [
        ({"v": 2, "id": 5, "op": "hello"}, ErrorCode.UNSUPPORTED_VERSION, 5, "supported: [1]"),
        ({"id": 5, "op": "hello"}, ErrorCode.BAD_REQUEST, 5, "'v'"),
        ({"v": 1, "op": "hello"}, ErrorCode.BAD_REQUEST, None, "'id'"),
        ({"v": 1, "id": [1], "op": "hello"}, ErrorCode.BAD_REQUEST, None, "'id'"),
        ({"v": 1, "id": 5, "op": "fly"}, ErrorCode.UNKNOWN_OP, 5, "'fly'"),
        ({"v": 1, "id": 5, "op": 3}, ErrorCode.BAD_REQUEST, 5, "'op'"),
        ({"v": 1, "id": 5, "op": "act", "args": [1]}, ErrorCode.BAD_REQUEST, 5, "'args' must be a map"),
        ({"v": 1, "id": 5, "op": "act", "args": {}}, ErrorCode.BAD_REQUEST, 5, "exactly one of 'image'"),
        ({"v": 1, "id": 5, "op": "act", "args": {"image": "pixels"}}, ErrorCode.BAD_REQUEST, 5, "args.image"),
        ({"v": 1, "id": 5, "op": "act", "args": {**image_args(), "instruction": 7}}, ErrorCode.BAD_REQUEST, 5,
         "args.instruction"),
        ({"v": 1, "id": 5, "op": "act", "args": {**image_args(), "tactile": {"force_torque": [1, 2]}}},
         ErrorCode.BAD_REQUEST, 5, "expected shape (6,), got [2]"),
        ({"v": 1, "id": 5, "op": "act", "args": {**image_args(), "tactile": {"smell": 1}}}, ErrorCode.BAD_REQUEST,
         5, "unknown keys"),
        ({"v": 1, "id": 5, "op": "act", "args": {"image": ndarray(np.zeros((8, 8, 3), np.float32))}},
         ErrorCode.BAD_REQUEST, 5, "uint8"),
        ({"v": 1, "id": 5, "op": "act", "args": {"image": ndarray(np.zeros((1, 5000, 3), np.uint8))}},
         ErrorCode.PAYLOAD_TOO_LARGE, 5, "exceeds the limits"),
        ({"v": 1, "id": 5, "op": "act", "args": {"image": {"__image__": "png", "data": b"not a png"}}},
         ErrorCode.BAD_REQUEST, 5, "cannot decode png"),
        ({"v": 1, "id": 5, "op": "health", "deadline_ms": "soon"}, ErrorCode.BAD_REQUEST, 5, "deadline_ms"),
        ({"v": 1, "id": 5, "op": "caption", "args": {**image_args(), "length": "epic"}}, ErrorCode.BAD_REQUEST,
         5, "args.length"),
        ({"v": 1, "id": 5, "op": "query", "args": image_args()}, ErrorCode.BAD_REQUEST, 5, "args.question"),
        ({"v": 1, "id": 5, "op": "detect", "args": {**image_args(), "object": "cup", "stream": True}},
         ErrorCode.BAD_REQUEST, 5, "does not stream"),
        ({"v": 1, "id": 5, "op": "query", "args": {**image_args(), "question": "?", "settings": {"top_p": 2}}},
         ErrorCode.BAD_REQUEST, 5, "args.settings.top_p"),
    ],
)
def test_error_codes(raw: RawDealer, header: dict, code: str, rid: object, needle: str) -> None:
    assert_error(raw.request(header), code, rid, needle)


def test_undecodable_header_and_bad_frames(raw: RawDealer) -> None:
    raw.send(None, raw_header=b"\xc1\xc1")
    assert_error(raw.recv(), ErrorCode.BAD_REQUEST, None, "not valid msgpack")
    raw.send(None, raw_header=msgpack.packb([1, 2]))
    assert_error(raw.recv(), ErrorCode.BAD_REQUEST, None, "must be a msgpack map")
    arr = np.zeros((4, 4, 3), np.uint8)
    raw.send(req("act", rid=9, args={"image": frame_ref(arr, 0)}), arr.tobytes()[:-1])
    assert_error(raw.recv(), ErrorCode.BAD_REQUEST, 9, "needs 48 bytes, got 47")
    raw.send(req("act", rid=10, args={"image": frame_ref(arr, 1)}), arr.tobytes())
    assert_error(raw.recv(), ErrorCode.BAD_REQUEST, 10, "does not exist")


@pytest.mark.parametrize(("side", "needle"), [(5000, "5000x5000 exceeds the limits"), (20000, "exceeds limit")])
def test_png_bomb_is_rejected_before_decoding(raw: RawDealer, side: int, needle: str) -> None:
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")  # 25 M / 400 M pixels in a few hundred KB
    reply = raw.request(req("act", rid=11, args={"image": {"__image__": "png", "data": buf.getvalue()}}),
                        timeout_ms=10000)
    assert_error(reply, ErrorCode.PAYLOAD_TOO_LARGE, 11, needle)


def test_unauthorized_and_payload_limits(start_server: StartServer) -> None:
    server = start_server(server={"auth_tokens": ("s3cret",), "max_message_bytes": 4096})
    ctx = zmq.Context()
    client = RawDealer(ctx, server.endpoint)
    try:
        assert_error(client.request(req("health", rid=1)), ErrorCode.UNAUTHORIZED, 1, "auth")
        assert_error(client.request(req("health", rid=2, auth="wrong")), ErrorCode.UNAUTHORIZED, 2)
        assert client.request(req("health", rid=3, auth="s3cret"))["ok"]
        assert client.request(req("hello", rid=4, auth="s3cret"))["result"]["auth"] == "token"
        big = np.zeros((40, 40, 3), np.uint8)  # 4800 bytes: over the limit, under the hard cap (2x)
        reply = client.request(req("act", rid=5, auth="s3cret", args={"image": frame_ref(big, 0)}), big.tobytes())
        assert_error(reply, ErrorCode.PAYLOAD_TOO_LARGE, None, "limit 4096")
    finally:
        client.close()
        ctx.term()


def test_model_unavailable_when_vlm_disabled_ops_are_unknown(start_server: StartServer) -> None:
    server = start_server(vlm={"enabled": False})
    ctx = zmq.Context()
    client = RawDealer(ctx, server.endpoint)
    try:
        reply = client.request(req("caption", rid=1, args=image_args()))
        assert_error(reply, ErrorCode.UNKNOWN_OP, 1, "'caption'")
        assert "caption" not in client.request(req("hello"))["result"]["ops"]
    finally:
        client.close()
        ctx.term()


def test_model_unavailable_while_loading_and_after_failed_load(start_server: StartServer) -> None:
    def broken(*_: object) -> object:
        raise FileNotFoundError("no checkpoint at /nowhere")

    server = InferenceServer(server_config(), load_policy=broken, load_generator=lambda *a: WordGenerator())
    server.start()
    try:
        assert server.wait_ready(30) is False
        ctx = zmq.Context()
        client = RawDealer(ctx, server.endpoint)
        reply = client.request(req("act", rid=1, args=image_args()))
        assert_error(reply, ErrorCode.MODEL_UNAVAILABLE, 1, "no checkpoint at /nowhere")
        health = client.request(req("health"))["result"]
        assert health["status"] == "degraded" and "no checkpoint" in health["detail"]
        client.close()
        ctx.term()
    finally:
        server.stop()

