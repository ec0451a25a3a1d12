"""The predecessor-compatible routes: POST /predict, GET /health, GET /stats (real inference server)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from tests.bridge.http.conftest import image_bytes
from vtla_contracts.action_layout import ACTION_DESCRIPTION


def form(**fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)  # /predict takes multipart only (415 else)
    for name, value in fields.items():
        if isinstance(value, bytes):
            data.add_field(name, value, filename=f"{name}.bin", content_type="application/octet-stream")
        else:
            data.add_field(name, str(value))
    return data


def test_predict_returns_the_predecessor_shape(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/predict", data=form(image=image_bytes(640, 480), instruction="Pick up the red cube",
                                                       use_dummy_tactile="True"))
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert set(out) == {"success", "action", "action_breakdown", "metadata"}
        assert out["success"] is True
        action = out["action"]
        assert len(action) == 7 and all(isinstance(v, float) for v in action)
        bd = out["action_breakdown"]
        assert bd["translation"] == {"dx": action[0], "dy": action[1], "dz": action[2], "unit": "meters"}
        assert bd["rotation"] == {"droll": action[3], "dpitch": action[4], "dyaw": action[5], "unit": "radians"}
        assert bd["gripper"] == {"value": action[6], "range": "0 (open) to 1 (closed)"}
        assert out["metadata"] == {"instruction": "Pick up the red cube", "image_size": [640, 480],
                                   "used_dummy_tactile": True}
        assert "compute;dur=" in resp.headers["Server-Timing"]

    run(body)


def test_predict_with_force_torque_and_tactile_image_uses_touch(run: Any) -> None:
    async def body(client: TestClient) -> None:
        ft = json.dumps([0.5, 0.0, -1.0, 0.0, 0.1, 0.0])
        resp = await client.post("/predict", data=form(image=image_bytes(), use_dummy_tactile="false",
                                                       force_torque=ft, tactile_image=image_bytes(32, 32)))
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert out["metadata"]["used_dummy_tactile"] is False
        assert out["metadata"]["instruction"] is None
        # a non-PNG/JPEG image (decoded by the companion) is accepted too
        resp = await client.post("/predict", data=form(image=image_bytes(fmt="BMP")))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["metadata"]["image_size"] == [96, 64]

    run(body)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"instruction": "no image"}, 422, "validation_error"),
        ({"image": "a text field, not a file"}, 422, "validation_error"),
        ({"image": b"definitely not an image"}, 400, "bad_request"),
        ({"image": b"", "instruction": "x"}, 400, "bad_request"),
        ({"use_dummy_tactile": "maybe", "image": image_bytes()}, 422, "validation_error"),
        ({"use_dummy_tactile": "false", "image": image_bytes()}, 422, "validation_error"),
        ({"use_dummy_tactile": "true", "force_torque": "[1,2,3,4,5,6]", "image": image_bytes()}, 422,
         "validation_error"),
        ({"force_torque": "[1, 2]", "image": image_bytes()}, 422, "validation_error"),
        ({"force_torque": "not json", "image": image_bytes()}, 422, "validation_error"),
        ({"tactile_image": b"junk", "image": image_bytes()}, 400, "bad_request"),
        ({"instruction": "x" * 5000, "image": image_bytes()}, 422, "validation_error"),
    ],
)
def test_predict_rejects_bad_forms(run: Any, fields: dict[str, Any], status: int, code: str) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/predict", data=form(**fields))
        assert resp.status == status, await resp.text()
        out = await resp.json()
        assert out["error"]["code"] == code and out["detail"] == out["error"]["message"]

    run(body)


def test_predict_needs_a_form_and_respects_the_body_limit(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/predict", json={"image": "x"})
        assert resp.status == 415
        assert (await resp.json())["error"]["code"] == "unsupported_media_type"
        resp = await client.post("/predict", data={"instruction": "no file in an urlencoded form"})
        assert resp.status == 415
        resp = await client.post("/predict", data=form(image=image_bytes(640, 480, "BMP")))  # ~900 KB
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"

    run(body, max_body_bytes=200_000)


def test_predict_rejects_images_over_the_pixel_limits(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/predict", data=form(image=image_bytes(300, 20)))
        assert resp.status == 413
        assert "exceeds the limits" in (await resp.json())["detail"]

    run(body, max_image_width=256)


def test_health_and_stats(run: Any, inference_server: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.get("/health")
        assert resp.status == 200
        health = await resp.json()
        assert health["status"] == "healthy" and health["model_loaded"] is True
        assert health["cuda_available"] is False and health["gpu_memory"] is None
        assert health["server"]["reachable"] is True and health["api_key_enabled"] is False
        assert health["model"] is not None and health["models"][health["model"]]["random_weights"] is True
        resp = await client.get("/stats")
        assert resp.status == 200
        stats = await resp.json()
        assert len(stats["mean"]) == 7 and len(stats["std"]) == 7
        assert stats["description"] == dict(ACTION_DESCRIPTION)
        assert np.all(np.asarray(stats["std"]) > 0)

    run(body)
