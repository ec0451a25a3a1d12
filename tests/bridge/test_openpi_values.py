"""openpi-client's value forms over the ZeroMQ protocol, encoded by the real openpi-client package.

- every position where the protocol takes a number or a boolean accepts openpi's numpy-scalar
  form (``__npgeneric__``), the request ``id`` included (error replies echo it);
- the ``inline_arrays`` header key makes reply arrays inline, so openpi's own ``unpackb`` reads
  ``act`` replies of any chunk size (the default sends arrays >= 1024 bytes as frames);
- channels-first uint8 images (3, H, W) are accepted where unambiguous;
- unknown ``act`` argument keys are refused by name.

Real server, real tiny VTLA or a real scripted expert, a raw DEALER socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from openpi_client import msgpack_numpy

from bridge.protocol import ErrorCode
from bridge.server import InferenceServer
from tests.bridge.raw import RawDealer
from tests.conftest import StartServer, server_config
from vtla_contracts.privileged_state import PROPRIO_DIM


def openpi_request(dealer: RawDealer, header: dict[str, Any]) -> dict[str, Any]:
    """Send a header packed by openpi's packb (arrays inline, numpy scalars as __npgeneric__)."""
    dealer.send(None, raw_header=msgpack_numpy.packb(header))
    return dealer.recv(timeout_ms=20000)


@pytest.fixture
def dealer(start_server: StartServer) -> Iterator[RawDealer]:
    server = start_server(real_policy=True)  # the tiny VTLA; the generator is the WordGenerator double
    ctx = zmq.Context()
    client = RawDealer(ctx, server.endpoint)
    yield client
    client.close()
    ctx.term()


IMAGE = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def act_header(rid: Any = 1, **args: Any) -> dict[str, Any]:
    return {"v": 1, "id": rid, "op": "act", "args": {"image": IMAGE, "instruction": "lift", **args}}


def test_packb_of_numpy_scalars_is_what_this_test_sends() -> None:
    blob = msgpack_numpy.packb({"id": np.int64(3)})
    assert b"__npgeneric__" in blob  # otherwise these tests would test plain numbers


@pytest.mark.parametrize("rid", [np.int64(41), np.uint32(42), np.int16(-43)])
def test_npgeneric_id_is_echoed_in_success_and_error_replies(dealer: RawDealer, rid: np.generic) -> None:
    ok = openpi_request(dealer, act_header(rid))
    assert ok["ok"] and ok["id"] == int(rid) and type(ok["id"]) is int, ok
    unknown_op = openpi_request(dealer, {"v": 1, "id": rid, "op": "fly"})
    assert unknown_op["error"]["code"] == ErrorCode.UNKNOWN_OP and unknown_op["id"] == int(rid)
    bad_array = {"v": 1, "id": rid, "op": "act",
                 "args": {"image": {b"__ndarray__": True, b"data": b"xx", b"dtype": "|u1", b"shape": [4, 4, 3]}}}
    rejected = openpi_request(dealer, bad_array)  # fails while decoding: the id comes from peeking
    assert rejected["error"]["code"] == ErrorCode.BAD_REQUEST and rejected["id"] == int(rid), rejected


def test_npgeneric_float_id_is_refused(dealer: RawDealer) -> None:
    reply = openpi_request(dealer, act_header(np.float32(1.5)))
    assert reply["error"]["code"] == ErrorCode.BAD_REQUEST and "'id'" in reply["error"]["message"]


def test_npgeneric_deadline_ms_and_version(dealer: RawDealer) -> None:
    reply = openpi_request(dealer, {**act_header(2), "deadline_ms": np.float32(5000.0), "v": np.int8(1)})
    assert reply["ok"], reply
    expired = openpi_request(dealer, {**act_header(3), "deadline_ms": np.float64(-1.0)})
    assert expired["error"]["code"] == ErrorCode.BAD_REQUEST and "deadline_ms" in expired["error"]["message"]


def test_npgeneric_list_elements_of_force_torque_and_proprio(dealer: RawDealer) -> None:
    force_torque = [np.float32(0.0), np.float64(0.5), np.int32(2), 0.0, 0.0, np.float16(1.0)]
    reply = openpi_request(dealer, act_header(4, tactile={"force_torque": force_torque}))
    assert reply["ok"], reply
    # the same numbers sent as an array give the same actions: the scalars were read as numbers
    same = openpi_request(dealer, act_header(5, tactile={"force_torque": np.float32([0, 0.5, 2, 0, 0, 1])}))
    np.testing.assert_allclose(reply["result"]["actions"], same["result"]["actions"], rtol=1e-5, atol=1e-6)


def test_npgeneric_settings_and_stream(dealer: RawDealer) -> None:
    settings = {"temperature": np.float32(0.0), "top_p": np.float64(0.9), "max_tokens": np.int64(2),
                "max_objects": np.uint8(3)}
    header = {"v": 1, "id": 6, "op": "query",
              "args": {"image": IMAGE, "question": "what?", "settings": settings, "stream": np.bool_(True)}}
    dealer.send(None, raw_header=msgpack_numpy.packb(header))
    replies = [dealer.recv(timeout_ms=20000)]
    while "partial" in replies[-1]:
        replies.append(dealer.recv(timeout_ms=20000))
    final = replies[-1]
    assert final["ok"], final
    assert len(replies) == 3  # streamed: two partial chunks, then the final reply
    assert final["result"]["answer"] == "w1 w2 "  # max_tokens=np.int64(2) was applied
    not_streamed = openpi_request(dealer, {**header, "id": 7, "args": {**header["args"], "stream": np.bool_(False)}})
    assert not_streamed["ok"] and "partial" not in not_streamed


def test_npgeneric_of_the_wrong_kind_is_refused_naming_the_field(dealer: RawDealer) -> None:
    top_p_as_bool = {"v": 1, "id": 8, "op": "query",
                     "args": {"image": IMAGE, "question": "?", "settings": {"top_p": np.bool_(True)}}}
    reply = openpi_request(dealer, top_p_as_bool)
    assert reply["error"]["code"] == ErrorCode.BAD_REQUEST and "top_p" in reply["error"]["message"]
    stream_as_int = {"v": 1, "id": 9, "op": "caption", "args": {"image": IMAGE, "stream": np.int64(1)}}
    reply = openpi_request(dealer, stream_as_int)
    assert reply["error"]["code"] == ErrorCode.BAD_REQUEST and "args.stream" in reply["error"]["message"]


def test_unknown_act_argument_is_refused_by_name(dealer: RawDealer) -> None:
    reply = openpi_request(dealer, act_header(10, state=np.zeros(8, np.float32)))
    assert reply["error"]["code"] == ErrorCode.BAD_REQUEST
    assert "['state']" in reply["error"]["message"] and "proprio" in reply["error"]["message"]


def test_channels_first_image_equals_channels_last(dealer: RawDealer) -> None:
    chw = np.ascontiguousarray(IMAGE.transpose(2, 0, 1))
    first = openpi_request(dealer, {**act_header(11), "args": {"image": chw, "instruction": "lift"}})
    last = openpi_request(dealer, act_header(12))
    assert first["ok"] and last["ok"], (first, last)
    np.testing.assert_allclose(first["result"]["actions"], last["result"]["actions"], rtol=1e-5, atol=1e-6)
    ambiguous = openpi_request(dealer, {**act_header(13), "args": {"image": np.zeros((4, 3, 5), np.uint8)}})
    assert ambiguous["error"]["code"] == ErrorCode.BAD_REQUEST and "(3, H, W)" in ambiguous["error"]["message"]


@pytest.mark.parametrize("chunk_size", [1, 4, 50])
def test_openpi_unpackb_reads_inline_act_replies(chunk_size: int) -> None:
    config = server_config(policy={"kind": "expert-lift", "options": {"chunk_size": chunk_size}},
                           vlm={"enabled": False})
    with InferenceServer(config) as server:
        assert server.wait_ready(60), server.loop.state.detail
        _check_inline_replies(server.endpoint, chunk_size)


def _check_inline_replies(endpoint: str, chunk_size: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        proprio = np.linspace(0.0, 1.0, PROPRIO_DIM, dtype=np.float32)
        header = {"v": 1, "id": 1, "op": "act", "inline_arrays": np.bool_(True),
                  "args": {"image": IMAGE, "proprio": proprio}}
        sock.send_multipart([b"", msgpack_numpy.packb(header)])
        assert sock.poll(20000)
        frames = sock.recv_multipart()
        assert len(frames) == 2  # no buffer frames: everything is in the header
        reply = msgpack_numpy.unpackb(frames[1])  # openpi's decoder, unchanged
        assert reply["ok"], reply
        actions = reply["result"]["actions"]
        assert actions.dtype == np.float32 and actions.shape == (chunk_size, 7)
        np.testing.assert_array_equal(reply["result"]["action"], actions[0])
        # without the key, arrays >= 1024 bytes travel as frames, which openpi's decoder cannot read
        sock.send_multipart([b"", msgpack_numpy.packb({**header, "id": 2, "inline_arrays": False})])
        assert sock.poll(20000)
        framed = sock.recv_multipart()
        assert len(framed) == (3 if actions.nbytes >= 1024 else 2)
        # numpy scalars as elements of the proprio list, and np.str_ as the instruction
        as_scalars = {**header, "id": 3, "args": {"image": IMAGE, "proprio": [np.float32(v) for v in proprio],
                                                  "instruction": np.str_("lift the cube")}}
        sock.send_multipart([b"", msgpack_numpy.packb(as_scalars)])
        assert sock.poll(20000)
        scalars = msgpack_numpy.unpackb(sock.recv_multipart()[1])
        assert scalars["ok"], scalars
        np.testing.assert_array_equal(scalars["result"]["actions"], actions)
    finally:
        sock.close(linger=0)
        ctx.term()
