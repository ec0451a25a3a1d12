"""The static-buffer forward (default) against the plain one: same actions, reused buffers, every shape."""

from __future__ import annotations

import numpy as np
import pytest

from models.vtla.serving import VTLAPolicy, load_policy
from tests.models.vtla.conftest import force_torque, make_image, make_obs
from vtla_contracts.model_spec import ModelSpec

ATOL = 1e-5  # float32 CPU: the same math over other tensor widths (fixed-width text)


def policy(**options: object) -> VTLAPolicy:
    return load_policy(ModelSpec(kind="vtla", preset="tiny", options=options), "cpu", "float32")


def batches() -> list[list[object]]:
    out = []
    for b in range(6):
        batch = []
        for r in range(1 + b % 3):
            seed = 10 * b + r
            instruction = ["pick", None, "stack the blue block on the green one"][seed % 3]
            kwargs: dict[str, object] = {"instruction": instruction}
            if seed % 2 == 0:
                kwargs["force_torque"] = force_torque(seed)
            if seed % 3 == 1:
                kwargs["tactile_image"] = make_image(32, 32, seed=seed)
            batch.append(make_obs(seed, size=(96, 128) if seed % 2 else (64, 64), **kwargs))
        out.append(batch)
    return out


def test_static_inputs_give_the_plain_forwards_actions() -> None:
    static, plain = policy(), policy(static_inputs=False)
    plain.model.load_state_dict(static.model.state_dict())
    assert static.static is not None and plain.static is None
    for batch in batches():
        got, want = static.act(batch), plain.act(batch)  # type: ignore[arg-type]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    other = static.act([make_obs(99, instruction="open the drawer")])
    assert np.abs(other - static.act([make_obs(99, instruction="pick")])).max() > 1e-4  # inputs matter


def test_buffers_are_reused_across_calls() -> None:
    p = policy()
    assert p.static is not None
    batch = [make_obs(1, instruction="pick", force_torque=force_torque(1))]
    p.act(batch)  # type: ignore[arg-type]
    key = p.static.last_shape
    assert key is not None
    first = p.static.buffers(*key)
    pointers = {
        "pixels": first.batch.pixel_values.data_ptr(),
        "text": first.batch.text_before.data_ptr(),
        "index": first.index.data_ptr(),
        "force_torque": first.batch.optional["force_torque"].data_ptr(),
    }
    host_ft = p._staging.buffer("force_torque", (1, 6), np.dtype(np.float32)).data_ptr()
    p.act([make_obs(2, instruction="pick", force_torque=force_torque(2))])
    assert p.static.last_shape == key
    again = p.static.buffers(*key)
    assert again.batch.pixel_values.data_ptr() == pointers["pixels"]
    assert again.batch.text_before.data_ptr() == pointers["text"]
    assert again.index.data_ptr() == pointers["index"]
    assert again.batch.optional["force_torque"].data_ptr() == pointers["force_torque"]
    assert p._staging.buffer("force_torque", (1, 6), np.dtype(np.float32)).data_ptr() == host_ft
    assert len(p.static.shapes()) == 1


def test_every_shape_runs_and_lengths_cover_the_prompt_limit() -> None:
    p = policy(batch_buckets=[1, 2])
    lengths = p.sequence_lengths()
    assert lengths == sorted(lengths) and all(n % p.model.sequence_bucket == 0 for n in lengths)
    before, after = p._prompts.encode(p._prompts.resolve("x"))
    longest = "x" * (p.cfg.prompt.max_text_tokens - len(before) - len(after) + 1)  # exactly the limit
    p.validate(make_obs(0, instruction=longest))
    p.act([make_obs(0, instruction=longest)])
    assert p.static is not None and p.static.last_shape is not None
    assert p.static.last_shape[1] == lengths[-1]  # the longest prompt runs at the longest length
    assert p.describe()["sequence_buckets"] == lengths and p.describe()["cuda_graphs"] is False


def test_warming_every_shape_runs_each_once_and_serving_adds_none() -> None:
    """What warmup() does on CUDA (there also capturing each shape), run on CPU."""
    p = policy(batch_buckets=[1, 2])
    assert p.static is not None
    count = p.warm_all_shapes(make_obs(0))
    assert count == 2 * len(p.sequence_lengths()) == len(p.static.shapes())
    p.act([make_obs(1, instruction="pick"), make_obs(2, force_torque=force_torque(2))])
    assert len(p.static.shapes()) == count  # a served batch finds its shape warmed


@pytest.mark.slow
def test_static_forward_compiles_fullgraph_without_recompiles() -> None:
    import torch._dynamo

    options = {"batch_buckets": [4], "sequence_bucket": 128}
    eager = policy(**options, static_inputs=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = policy(**options, compile=True)
    compiled.model.load_state_dict(eager.model.state_dict())
    assert compiled.static is not None
    for batch in batches():
        np.testing.assert_allclose(compiled.act(batch), eager.act(batch), atol=1e-4, rtol=0)  # type: ignore[arg-type]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
