"""Codec: round trips, openpi-client byte compatibility, and every way an array can be malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bridge.codec import EncodedImage, decode_header, encode_message
from bridge.protocol import ErrorCode, ProtocolError

LIMIT = 1 << 24

# (datetime64 and str arrays have no buffer format memoryview can cast: the encoder takes its uint8-view path)
dtypes = st.sampled_from(["<f4", "<f8", "|u1", "<i2", "<i4", "<i8", "<u2", "|b1", ">f4", "<f2", "<M8[s]", "<U3"])
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
)


def roundtrip(header: dict, threshold: int | None) -> dict:
    frames = encode_message(header, threshold)
    return decode_header(frames[0], frames[1:], LIMIT)


@settings(max_examples=150, deadline=None)
@given(arr=arrays, threshold=st.sampled_from([None, 0, 16, 1024]))
def test_array_roundtrip_exact(arr: np.ndarray, threshold: int | None) -> None:
    out = roundtrip({"x": arr, "nested": {"y": [arr]}}, threshold)
    for got in (out["x"], out["nested"]["y"][0]):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert got.tobytes() == arr.tobytes()


@settings(max_examples=100, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
)
def test_plain_values_roundtrip(value: object) -> None:
    assert roundtrip({"v": value}, 1024)["v"] == value


def test_large_arrays_travel_as_frames_small_ones_inline() -> None:
    big = np.arange(1000, dtype=np.float32)
    small = np.arange(3, dtype=np.float32)
    frames = encode_message({"big": big, "small": small}, frame_threshold_bytes=1024)
    assert len(frames) == 2 and bytes(frames[1]) == big.tobytes()
    header = msgpack.unpackb(frames[0], raw=False)
    assert header["big"][b"frame"] == 0 and b"data" not in header["big"]
    assert header["small"][b"data"] == small.tobytes()


def test_noncontiguous_array_is_sent_in_c_order() -> None:
    arr = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(roundtrip({"a": arr}, 0)["a"], arr)


# openpi-client's msgpack_numpy.pack_array writes {b"__ndarray__": True, b"data": ..., b"dtype": str, b"shape": tuple}
OPENPI_INT16_12 = bytes.fromhex(
    "84"  # map of 4
    "c40b5f5f6e6461727261795f5f" "c3"  # bin "__ndarray__": true
    "c40464617461" "c404" "01000200"  # bin "data": bin 4 bytes
    "c40564747970" "65" "a33c6932"  # bin "dtype": str "<i2"
    "c40573686170" "65" "920102"  # bin "shape": [1, 2]
)


def test_encoder_writes_openpi_bytes_exactly() -> None:
    frames = encode_message({"a": np.array([[1, 2]], dtype="<i2")}, frame_threshold_bytes=None)
    assert len(frames) == 1
    assert frames[0] == b"\x81\xa1a" + OPENPI_INT16_12


def test_decoder_reads_openpi_bytes() -> None:
    out = decode_header(b"\x81\xa1a" + OPENPI_INT16_12, [], LIMIT)
    np.testing.assert_array_equal(out["a"], np.array([[1, 2]], dtype="<i2"))
    assert out["a"].dtype == np.dtype("<i2")


def test_decoder_accepts_str_marker_keys_and_npgeneric() -> None:
    header = msgpack.packb(
        {
            "a": {"__ndarray__": True, "dtype": "<f4", "shape": [2], "data": np.float32([1.5, 2]).tobytes()},
            "s": {b"__npgeneric__": True, b"dtype": "<f8", b"data": 2.5},
        },
        use_bin_type=True,
    )
    out = decode_header(header, [], LIMIT)
    np.testing.assert_array_equal(out["a"], np.float32([1.5, 2]))
    assert out["s"] == 2.5 and type(out["s"]) is float  # a plain number, accepted wherever one is


def test_encoded_images_roundtrip_inline_and_as_frame() -> None:
    for threshold in (None, 0):
        out = roundtrip({"img": EncodedImage("jpeg", b"\xff\xd8\xffjunk")}, threshold)
        assert isinstance(out["img"], EncodedImage)
        assert out["img"].format == "jpeg" and bytes(out["img"].data) == b"\xff\xd8\xffjunk"


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def nd(**fields: object) -> dict:
    return {"__ndarray__": True, **fields}


@pytest.mark.parametrize(
    ("value", "code", "needle"),
    [
        (nd(dtype="<f4", shape=[2], data=b"\0" * 7), ErrorCode.BAD_REQUEST, "needs 8 bytes, got 7"),
        (nd(dtype="|O", shape=[1], data=b"\0" * 8), ErrorCode.BAD_REQUEST, "not allowed"),
        (nd(dtype="<c8", shape=[1], data=b"\0" * 8), ErrorCode.BAD_REQUEST, "not allowed"),
        (nd(dtype="V8", shape=[1], data=b"\0" * 8), ErrorCode.BAD_REQUEST, "not allowed"),
        (nd(dtype="nonsense", shape=[1], data=b""), ErrorCode.BAD_REQUEST, "unknown dtype"),
        (nd(dtype="<f4", shape=[-1], data=b""), ErrorCode.BAD_REQUEST, "non-negative"),
        (nd(dtype="<f4", shape="3", data=b""), ErrorCode.BAD_REQUEST, "'shape'"),
        (nd(dtype="<f4", shape=[1]), ErrorCode.BAD_REQUEST, "exactly one of 'data' or 'frame'"),
        (nd(dtype="<f4", shape=[1], data=b"\0" * 4, frame=0), ErrorCode.BAD_REQUEST, "exactly one"),
        (nd(dtype="<f4", shape=[1], frame=3), ErrorCode.BAD_REQUEST, "does not exist"),
        (nd(dtype="<f4", shape=[1], data="text"), ErrorCode.BAD_REQUEST, "'data' must be bin"),
        (nd(dtype="<f8", shape=[1 << 30, 1 << 10], data=b""), ErrorCode.PAYLOAD_TOO_LARGE, "limit"),
        ({"__image__": "gif", "data": b"x"}, ErrorCode.BAD_REQUEST, "must be one of"),
    ],
)
def test_malformed_values_are_rejected_with_precise_errors(value: object, code: str, needle: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_header(packed({"a": value}), [], LIMIT)
    assert info.value.code == code
    assert needle in info.value.message


def test_frame_length_mismatch_is_rejected() -> None:
    header = packed({"a": nd(dtype="<f4", shape=[4], frame=0)})
    with pytest.raises(ProtocolError, match="needs 16 bytes, got 12"):
        decode_header(header, [b"\0" * 12], LIMIT)


@pytest.mark.parametrize("blob", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a\xc4\xff", b"\xdd\xff\xff\xff\xff"])
def test_corrupt_msgpack_is_bad_request(blob: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_header(blob, [], LIMIT)
    assert info.value.code == ErrorCode.BAD_REQUEST


def test_frames_are_decoded_zero_copy() -> None:
    buf = bytearray(np.arange(4, dtype=np.float32).tobytes())
    out = decode_header(packed({"a": nd(dtype="<f4", shape=[4], frame=0)}), [memoryview(buf)], LIMIT)
    buf[0:4] = np.float32(9).tobytes()
    assert out["a"][0] == 9.0  # a view of the received frame, not a copy
