"""Property-based fuzzing of the header decoder and the argument parser (hypothesis, bounded in
examples so CI time is bounded): exactly one reply per request, never ``internal``, memory per
header bounded by its size.

The socket half sends every generated message to a real server and waits for exactly one reply;
the in-process half runs the decoder and the parsers under tracemalloc.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import decode_header
from bridge.image_args import ImageLimits
from bridge.parsing import parse_act, parse_generation, parse_head
from bridge.protocol import ALL_OPS, ErrorCode, ProtocolError
from bridge.server import InferenceServer
from models.interfaces import InputError
from tests.bridge.raw import RawDealer
from tests.conftest import server_config
from tests.doubles import EchoPolicy, WordGenerator

# per property: 120 each take ~40 s together on a busy 2-core host; VTLA_FUZZ_EXAMPLES=5000 for a long run
EXAMPLES = int(os.environ.get("VTLA_FUZZ_EXAMPLES", "120"))
KEYS = ["v", "id", "op", "args", "image", "images", "__ndarray__", "dtype", "shape", "frame", "data", "__image__",
        "tactile", "force_torque", "proprio", "deadline_ms", "settings", "stream", "length", "question", "object",
        "instruction", "session", "auth", "temperature", "top_p", "max_tokens", "max_objects", "__npgeneric__"]
DTYPES = ["|u1", "<f4", "<f8", "<i8", "|b1", ">f4", "<U4", "|O", "|V4", "<c8", "x", "<M8[s]", "<f2"]

scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.binary(max_size=48) | st.sampled_from(KEYS) | st.sampled_from(ALL_OPS)
)


def _ndarray(draw_shape: list[int], dtype: str, data: bytes | None, frame: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"__ndarray__": True, "dtype": dtype, "shape": draw_shape}
    if data is not None:
        out["data"] = data
    if frame is not None:
        out["frame"] = frame
    return out


arrays = st.builds(
    _ndarray,
    st.lists(st.integers(0, 2**40) | st.sampled_from([0, 1, 3, 8, 2**31]), max_size=4),
    st.sampled_from(DTYPES),
    st.none() | st.binary(max_size=256),
    st.none() | st.integers(-2, 3),
)
images = st.fixed_dictionaries({"__image__": st.sampled_from(["jpeg", "png", "gif", ""]),
                                "data": st.binary(max_size=64)})
values = st.recursive(
    scalars | arrays | images,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4) | st.integers(-3, 3), children, max_size=4),
    max_leaves=24,
)
headers = st.fixed_dictionaries(
    {"v": st.just(1) | values, "id": st.integers(0, 2**32) | st.text(max_size=8) | values,
     "op": st.sampled_from(ALL_OPS) | values},
    optional={"args": st.dictionaries(st.sampled_from(KEYS), values, max_size=6), "deadline_ms": values,
              "auth": values},
)


def packed(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


# ----------------------------------------------------------------- in process: decoder + parsers

LIMITS = ImageLimits(4096, 4096, 16_777_216)


def _run_pipeline(blob: bytes, buffers: list[bytes]) -> None:
    header = decode_header(blob, buffers, 1 << 20)
    head = parse_head(header, (), frozenset(ALL_OPS), 3_600_000.0)
    if head.op == "act":
        parse_act(head.args, "primary", LIMITS, 2000)
    elif head.op in ("caption", "query", "detect", "point"):
        parse_generation(head.op, 1, head.args, LIMITS)


def _check_pipeline(blob: bytes, buffers: list[bytes]) -> None:
    tracemalloc.start()
    try:
        _run_pipeline(blob, buffers)
    except ProtocolError as exc:
        assert exc.code != ErrorCode.INTERNAL
        assert len(exc.message) <= 1000
    except InputError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # decoded values plus parse work: a constant allowance plus twice what was sent
    assert peak <= 2 * (len(blob) + sum(map(len, buffers))) + 512 * 1024, peak


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=headers, buffers=st.lists(st.binary(max_size=300), max_size=2))
def test_parser_only_raises_client_errors(header: dict[str, Any], buffers: list[bytes]) -> None:
    _check_pipeline(packed(header), buffers)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(blob=st.binary(max_size=2048), header=headers, cut=st.integers(0, 4096), flip=st.integers(0, 255))
def test_decoder_survives_arbitrary_and_mutated_bytes(blob: bytes, header: dict[str, Any], cut: int,
                                                     flip: int) -> None:
    _check_pipeline(blob, [])
    good = bytearray(packed(header))
    if good:
        good[cut % len(good)] = flip
    _check_pipeline(bytes(good[: cut or None]), [])


# ----------------------------------------------------------------- over a real socket: one reply each


@pytest.fixture(scope="module")
def live_server() -> Iterator[InferenceServer]:
    server = InferenceServer(server_config(), load_policy=lambda *a: EchoPolicy(),
                             load_generator=lambda *a: WordGenerator())
    server.start()
    assert server.wait_ready(120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dealer(live_server: InferenceServer) -> Iterator[RawDealer]:
    ctx = zmq.Context()
    client = RawDealer(ctx, live_server.endpoint)
    yield client
    client.close()
    ctx.term()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=headers, buffers=st.lists(st.binary(max_size=300), max_size=2))
def test_every_request_gets_exactly_one_final_reply(dealer: RawDealer, header: dict[str, Any],
                                                    buffers: list[bytes]) -> None:
    marker = np.random.default_rng().integers(1, 2**62)
    header["id"] = int(marker)  # a valid, unique id: the reply must echo it
    if header.get("op") == "caption" and isinstance(header.get("args"), dict):
        header["args"].pop("stream", None)  # partial replies are not final replies
    dealer.send(header, *buffers)
    finals = []
    while dealer.sock.poll(5000 if not finals else 30):
        reply = dealer.recv()
        if "partial" in reply:
            continue
        finals.append(reply)
    assert len(finals) == 1, finals
    reply = finals[0]
    assert reply["id"] == marker, reply
    if not reply["ok"]:
        assert reply["error"]["code"] != ErrorCode.INTERNAL, reply
