"""The served OpenAPI schemas and the validators the routes use agree on every body: a body the
schema admits is accepted, a body it refuses is refused with a 4xx (jsonschema is the judge)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.http.errors import ApiError
from bridge.http.openapi import openapi_spec
from bridge.http.route_bodies import MAX_REQUEST_ID_CHARS, MAX_TEXT_CHARS, predict_form, v1_body
from bridge.http.settings import HttpSettings
from bridge.protocol import OP_ACT, OP_CAPTION, OP_DETECT, OP_POINT, OP_QUERY
from tests.bridge.http.conftest import data_uri, image_bytes, run_app

SETTINGS = HttpSettings(server_endpoint="tcp://127.0.0.1:1", max_instruction_chars=50)
V1_OPS = (OP_CAPTION, OP_QUERY, OP_DETECT, OP_POINT, OP_ACT)
PNG = "data:image/png;base64,iVBORw0KGgo="

_LENGTHS = (0, 1, 2, 49, 50, 51, MAX_REQUEST_ID_CHARS - 1, MAX_REQUEST_ID_CHARS, MAX_REQUEST_ID_CHARS + 1,
            MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1)
_EDGE_TEXTS = st.builds(lambda c, n: c * n, st.sampled_from(["a", " ", "\u00a0", "\x1e", "\ufeff", "é"]),
                        st.sampled_from(_LENGTHS))
_TEXTS = st.one_of(
    st.text(max_size=6),
    _EDGE_TEXTS,
    st.sampled_from(["short", "normal", "long", "huge", PNG, "data:,x", "https://x/y.png", "data:image/png;base64,",
                     "true", "false", "ON", "True", "oFf", " yes", "no\n", "maybe", "", "\n",
                     " [1,2,3,4,5,6] ", "[1,2]", "[1e31,0,0,0,0,0]", "[0,0,0,0,0,1.5e-40]", "[1234567,0,0,0,0,0]"]),
)
_NUMBERS = st.one_of(st.integers(-3, 70_000), st.sampled_from([0, 1, 1000, 1001, 65536, 65537, 10**40, -(10**40)]),
                     st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, 1.0, 2.0, 2.5, 1e39]))
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXTS)
_SETTINGS = st.dictionaries(st.sampled_from(["temperature", "top_p", "max_tokens", "max_objects", "other"]),
                            _SCALARS, max_size=4)
_VALUES = st.one_of(_EDGE_TEXTS, _SCALARS, _SETTINGS,
                    st.lists(st.one_of(_NUMBERS, st.booleans(), st.none()), max_size=8),
                    st.lists(_NUMBERS, min_size=6, max_size=6))


def _body_strategy(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one to three keys set to anything (or dropped): near the boundary, where disagreements live."""
    base = {"image_url": PNG, "question": "what?", "object": "cube"}
    changes = st.dictionaries(st.sampled_from([*keys, "unknown"]), st.one_of(_VALUES, st.just("<drop>")),
                              min_size=1, max_size=3)

    def apply(change: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in base.items() if k in keys}
        body.update(change)
        return {k: v for k, v in body.items() if v != "<drop>"}

    return changes.map(apply)


def _served_request_schemas() -> dict[str, dict[str, Any]]:
    spec = openapi_spec("test", SETTINGS)
    out = {}
    for path, item in spec["paths"].items():
        body = item.get("post", {}).get("requestBody")
        if body:
            content = next(iter(body["content"].values()))
            out[path] = content["schema"]
    return out


def _verdict(validate: Any, body: Any) -> int:
    try:
        validate(body)
    except ApiError as exc:
        return exc.status
    return 200


_EDGES: list[Any] = [
    *(c * n for c in ("a", " ", "\u00a0", "\x1e", "é") for n in _LENGTHS),
    None, True, False, 0, 1, -1, 0.0, 1.0, 2.0, 2.5, 1e-9, 99.99, 100, 100.5, 1000, 1001, 65536, 65537, 10**40, 1e39,
    "short", "normal", "long", "huge", PNG, "data:,x", "https://x/y.png", "data:image/png;base64,", "", [], {},
    [0] * 6, [0] * 5, [0] * 7, [1e38] * 6, [-1e39, 0, 0, 0, 0, 0], [True] * 6, [None] * 6, ["1"] * 6,
    {"temperature": 0}, {"temperature": 100.5}, {"top_p": 0}, {"top_p": 1e-9}, {"top_p": 1}, {"max_tokens": 2.0},
    {"max_tokens": 2.5}, {"max_tokens": 65537}, {"max_objects": 0}, {"max_objects": None}, {"other": "x"},
]


@pytest.mark.parametrize("op", V1_OPS)
def test_v1_schema_and_validator_agree_on_each_edge_value_of_each_field(op: str) -> None:
    spec = v1_body(op, SETTINGS)
    judge = jsonschema.Draft202012Validator(spec.json_schema())
    base = {k: v for k, v in {"image_url": PNG, "question": "what?", "object": "cube"}.items() if k in spec.fields}
    checked = 0
    for key in spec.fields:
        for value in _EDGES:
            body = {**base, key: value}
            status = _verdict(spec.validate, body)
            assert (status == 200) == judge.is_valid(body), (key, value, status)
            assert status in (200, 400, 422)
            checked += 1
    assert checked == len(spec.fields) * len(_EDGES) >= 4 * len(_EDGES)


@pytest.mark.parametrize("op", V1_OPS)
def test_v1_schema_and_validator_agree_on_every_body(op: str) -> None:
    spec = v1_body(op, SETTINGS)
    schema = spec.json_schema()
    assert schema == _served_request_schemas()[f"/v1/{op}"]
    judge = jsonschema.Draft202012Validator(schema)

    @settings(max_examples=600, deadline=None, database=None)
    @given(_body_strategy(list(spec.fields)))
    def check(body: dict[str, Any]) -> None:
        status = _verdict(spec.validate, body)
        if judge.is_valid(body):
            assert status == 200, (body, status)
        else:
            assert status in (400, 422), (body, status)

    check()


def test_predict_form_schema_and_validator_agree() -> None:
    form = predict_form(SETTINGS)
    schema = form.json_schema()
    assert schema == _served_request_schemas()["/predict"]
    judge = jsonschema.Draft202012Validator(schema)
    files = st.sampled_from([b"\x89PNG", b""])

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.dictionaries(st.sampled_from(["instruction", "use_dummy_tactile", "force_torque"]), _TEXTS),
           st.dictionaries(st.sampled_from(["image", "tactile_image"]), files))
    def check(texts: dict[str, str], uploads: dict[str, bytes]) -> None:
        status = _verdict(form.validate, {**texts, **uploads})
        as_json = {**texts, **{k: v.decode("latin-1") for k, v in uploads.items()}}  # binary: a string in the schema
        assert (status == 200) == judge.is_valid(as_json), (texts, uploads, status)
        assert status in (200, 422)

    check()


def test_the_spec_follows_the_configured_limits_and_keys() -> None:
    open_spec = openapi_spec("t", HttpSettings(server_endpoint="tcp://127.0.0.1:1", max_instruction_chars=7))
    act = open_spec["paths"]["/v1/act"]["post"]
    assert act["requestBody"]["content"]["application/json"]["schema"]["properties"]["instruction"]["maxLength"] == 7
    assert act["security"] == [] and "401" not in act["responses"]
    keyed = openapi_spec("t", HttpSettings(server_endpoint="tcp://127.0.0.1:1", api_keys=("k",), open_predict=True))
    assert keyed["paths"]["/v1/act"]["post"]["security"] == [{"MoondreamAuth": []}]
    assert "401" in keyed["paths"]["/v1/act"]["post"]["responses"]
    assert keyed["paths"]["/predict"]["post"]["security"] == []  # open_predict


def test_request_ids_of_any_characters_are_echoed_and_header_safe(run: Any) -> None:
    async def body(client: TestClient) -> None:
        for rid in ("plain-id_1", "line\nbreak", "ünï 字", "%41"):
            resp = await client.post("/v1/act", json={"image_url": data_uri(image_bytes()), "request_id": rid})
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["request_id"] == rid
            assert resp.headers["X-Request-Id"].isascii() and "\n" not in resp.headers["X-Request-Id"]
        assert resp.headers["X-Request-Id"] == "%2541"  # '%' itself is encoded: the header decodes unambiguously

    run(body)


def test_spec_served_matches_the_generator() -> None:
    settings_ = HttpSettings(server_endpoint="tcp://127.0.0.1:1", probe_timeout_s=0.2, max_instruction_chars=33)

    async def body(client: TestClient) -> None:
        served = await (await client.get("/openapi.json")).json()
        assert served == openapi_spec(served["info"]["version"], settings_)

    run_app(settings_, body)
