"""The server with both real (tiny, random-weight) models, in fp32 and in bf16 — the dtype the
GPU deployment uses; bf16 runs on CPU too, so the dtype path is exercised without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.client import BridgeClient, TextStream
from tests.conftest import StartServer

IMG = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_all_ops_with_real_tiny_models(start_server: StartServer, dtype: str) -> None:
    server = start_server(real_policy=True, real_generator=True, device={"device": "cpu", "dtype": dtype})
    with BridgeClient(server.endpoint, timeout_s=60) as client:
        health = client.health()
        assert health["dtype"] == dtype
        assert {m["dtype"] for m in health["models"].values()} == {dtype}
        act = client.act(image=IMG, instruction="open the drawer",
                         tactile={"force_torque": np.ones(6, np.float32)})
        assert act.actions.dtype == np.float32 and act.actions.shape[1] == 7
        assert np.isfinite(act.actions).all() and 0.0 <= act.action[6] <= 1.0
        caption = client.caption(IMG, "short", settings={"max_tokens": 6})
        assert not isinstance(caption, TextStream)
        assert caption.finish_reason in ("stop", "length") and caption.metrics["input_tokens"] > 0
        assert caption.metrics["output_tokens"] <= 6
        stream = client.query(IMG, "what is this?", stream=True, settings={"max_tokens": 6})
        assert isinstance(stream, TextStream)
        text = stream.text()
        assert stream.result is not None and stream.result.text == text
        boxes = client.detect(IMG, "cube", settings={"max_objects": 2}).items
        points = client.point(IMG, "cube", settings={"max_objects": 2}).items
        for item in [*boxes, *points]:
            assert all(0.0 <= v <= 1.0 for v in item.values())
        assert len(boxes) <= 2 and len(points) <= 2


def test_memory_budget_in_hello_and_health_and_the_bucket_in_timing(start_server: StartServer) -> None:
    server = start_server(real_policy=True, real_generator=True, device={"device": "cpu", "dtype": "float32"})
    with BridgeClient(server.endpoint, timeout_s=60) as client:
        hello_models = client.hello()["models"]
        health_models = client.health()["models"]
        for name, entry in health_models.items():
            memory = entry["memory"]
            assert memory == hello_models[name]["memory"]
            assert all(isinstance(v, int) and v >= 0 for k, v in memory.items() if k.endswith("_bytes"))
        # one act: the VTLA pads to its own smallest bucket, the loop does not pad it again
        timing = client.act(image=IMG, instruction="pick").timing
        assert timing["batch_size"] == 1 and timing["bucket"] == 1
