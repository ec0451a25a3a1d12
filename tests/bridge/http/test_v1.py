"""Moondream-compatible /v1 routes and /v1/act against a real inference server (tiny random models)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.http.settings import settings_from_config
from tests.bridge.http.conftest import FAST, data_uri, image_bytes, server_config

PNG = data_uri(image_bytes())


def sse_events(text: str) -> list[dict[str, Any]]:
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [json.loads(b[len("data: ") :]) for b in blocks]


def test_caption_query_detect_point(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/v1/caption", json={"image_url": PNG, "length": "short", "settings": FAST})
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert isinstance(out["caption"], str) and out["finish_reason"] in ("stop", "length")
        assert set(out["metrics"]) >= {"input_tokens", "output_tokens", "prefill_time_ms", "decode_time_ms", "ttft_ms"}
        assert out["metrics"]["output_tokens"] <= FAST["max_tokens"]
        assert re.fullmatch(r"caption_\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d-[0-9a-f]{6}", out["request_id"])
        assert resp.headers["X-Request-Id"] == out["request_id"]

        resp = await client.post("/v1/query", json={"image_url": data_uri(image_bytes(fmt="JPEG"), "image/jpeg"),
                                                    "question": "What is red?", "settings": FAST,
                                                    "request_id": "mine-1"})
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert isinstance(out["answer"], str) and out["request_id"] == "mine-1"

        resp = await client.post("/v1/detect", json={"image_url": PNG, "object": "red square", "settings": FAST})
        assert resp.status == 200, await resp.text()
        objects = (await resp.json())["objects"]
        assert len(objects) <= FAST["max_objects"]
        for box in objects:
            assert 0.0 <= box["x_min"] <= box["x_max"] <= 1.0 and 0.0 <= box["y_min"] <= box["y_max"] <= 1.0

        resp = await client.post("/v1/point", json={"image_url": PNG, "object": "red square", "settings": FAST})
        assert resp.status == 200, await resp.text()
        points = (await resp.json())["points"]
        assert len(points) <= FAST["max_objects"]
        assert all(0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0 for p in points)

    run(body)


@pytest.mark.parametrize(("op", "extra", "key"), [("caption", {"length": "normal"}, "caption"),
                                                  ("query", {"question": "Where?"}, "answer")])
def test_streaming_is_server_sent_events(run: Any, op: str, extra: dict[str, Any], key: str) -> None:
    async def body(client: TestClient) -> None:
        payload = {"image_url": PNG, "stream": True, "settings": {"max_tokens": 12}, **extra}
        resp = await client.post(f"/v1/{op}", json=payload)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(await resp.text())
        *chunks, final = events
        assert all(e["completed"] is False and isinstance(e["chunk"], str) and e["chunk"] for e in chunks)
        assert final["completed"] is True and "error" not in final
        assert "".join(e["chunk"] for e in chunks) == final[key]
        assert final["metrics"]["output_tokens"] <= 12
        # the same request without streaming gives the same (greedy) text
        resp = await client.post(f"/v1/{op}", json={**payload, "stream": False})
        assert (await resp.json())[key] == final[key]

    run(body)


def test_streaming_errors_before_the_first_chunk_keep_their_status(run: Any) -> None:
    async def body(client: TestClient) -> None:
        # a PNG cut after its header passes the companion (it reads headers only) and the server refuses it
        cut_png = data_uri(image_bytes()[:60])
        resp = await client.post("/v1/caption", json={"image_url": cut_png, "stream": True})
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_request"

    run(body)


def test_act_returns_the_whole_chunk(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/v1/act", json={"image_url": PNG, "instruction": "pick up the red cube",
                                                  "force_torque": [0, 0, 1, 0, 0, 0]})
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert len(out["actions"]) >= 1 and all(len(a) == 7 for a in out["actions"])
        assert out["action"] == out["actions"][0]
        assert out["used_dummy_tactile"] is False
        assert {"queue_ms", "compute_ms", "server_ms", "batch_size"} <= set(out["timing"])
        resp = await client.post("/v1/act", json={"image_url": PNG, "force_torque": [1, 2]})
        assert resp.status == 422

    run(body)


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        ({"data": "hello", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_request"),
        ({"json": [1, 2]}, 422, "validation_error"),
        ({"json": {"length": "short"}}, 422, "validation_error"),
        ({"json": {"image_url": 5}}, 422, "validation_error"),
        ({"json": {"image_url": "https://example.com/cat.jpg"}}, 400, "bad_request"),
        ({"json": {"image_url": "data:image/png;base64,@@@"}}, 400, "bad_request"),
        ({"json": {"image_url": "data:image/png,plain"}}, 400, "bad_request"),
        ({"json": {"image_url": data_uri(b"GIF? no")}}, 400, "bad_request"),
        ({"json": {"image_url": PNG, "length": "huge"}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "stream": "yes"}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "settings": "hot"}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "settings": {"max_tokens": 1.5}}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "settings": {"temperature": True}}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "request_id": 7}}, 422, "validation_error"),
        # the server's ranges (bridge.protocol.SETTING_RANGES), checked by the companion too
        ({"json": {"image_url": PNG, "settings": {"max_tokens": 0}}}, 422, "validation_error"),
        ({"json": {"image_url": PNG, "settings": {"top_p": 0}}}, 422, "validation_error"),
    ],
)
def test_caption_errors(run: Any, send: dict[str, Any], status: int, code: str) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/v1/caption", **send)
        assert resp.status == status, await resp.text()
        out = await resp.json()
        assert out["error"]["code"] == code
        assert "Traceback" not in await resp.text()

    run(body)


def test_required_text_fields(run: Any) -> None:
    async def body(client: TestClient) -> None:
        for op, field in (("query", "question"), ("detect", "object"), ("point", "object")):
            resp = await client.post(f"/v1/{op}", json={"image_url": PNG})
            assert resp.status == 422
            assert field in (await resp.json())["detail"]
            resp = await client.post(f"/v1/{op}", json={"image_url": PNG, field: "   "})
            assert resp.status == 422

    run(body)


def test_body_limit_is_413(run: Any) -> None:
    async def body(client: TestClient) -> None:
        big = data_uri(image_bytes(400, 400, "BMP"))
        resp = await client.post("/v1/caption", json={"image_url": big})
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"

    run(body, max_body_bytes=100_000)


def test_api_keys_are_enforced_on_v1_only(run: Any) -> None:
    async def body(client: TestClient) -> None:
        payload = {"image_url": PNG, "object": "cube", "settings": FAST}
        for headers in ({}, {"X-Moondream-Auth": "wrong"}, {"X-Moondream-Auth": ""}, {"Authorization": "Bearer no"}):
            resp = await client.post("/v1/point", json=payload, headers=headers)
            assert resp.status == 401, headers
            assert (await resp.json())["error"]["code"] == "unauthorized"
        for key in ("k-one", "k-two"):
            resp = await client.post("/v1/point", json=payload, headers={"X-Moondream-Auth": key})
            assert resp.status == 200
        resp = await client.post("/v1/point", json=payload, headers={"Authorization": "Bearer k-two"})
        assert resp.status == 200
        health = await (await client.get("/health")).json()
        assert health["api_key_enabled"] is True
        status = await (await client.get("/api/status")).json()
        assert status["auth_required"] is True

    run(body, api_keys=("k-one", "k-two"))


def test_vlm_api_key_env_adds_a_key() -> None:
    config = server_config(http={"api_keys": ["from-config"]})
    settings = settings_from_config(config, {"VLM_API_KEY": "from-env"}, server="tcp://127.0.0.1:5555")
    assert settings.api_keys == ("from-config", "from-env")
    assert settings_from_config(config, {}, server="tcp://127.0.0.1:5555").api_keys == ("from-config",)
    with pytest.raises(ValueError, match="wildcard"):
        settings_from_config(config, {})  # bind tcp://127.0.0.1:* cannot be connected to
