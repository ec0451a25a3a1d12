"""The VTLA forward under torch.compile(fullgraph=True, dynamic=False): static shapes, no recompiles."""

from __future__ import annotations

import numpy as np
import pytest

from models.vtla.serving import load_policy
from tests.models.vtla.conftest import force_torque, make_image, make_obs
from tests.models.vtla.test_policy import assert_close
from vtla_contracts.model_spec import ModelSpec

INSTRUCTIONS = ["pick", "pick up the red cube", "stack the blue block on the green one", None, "open"]


def batches() -> list[list[object]]:
    """20 batches of 1..4 observations: other prompts, frame sizes and optional inputs each time."""
    out = []
    for b in range(20):
        rows = 1 + b % 4
        batch = []
        for r in range(rows):
            seed = 10 * b + r
            kwargs: dict[str, object] = {"instruction": INSTRUCTIONS[seed % len(INSTRUCTIONS)]}
            if seed % 3 == 0:
                kwargs["force_torque"] = force_torque(seed)
            if seed % 4 == 1:
                kwargs["tactile_image"] = make_image(32, 32, seed=seed)
            batch.append(make_obs(seed, size=(96, 128) if seed % 2 else (64, 64), **kwargs))
        out.append(batch)
    return out


@pytest.mark.slow
def test_compiled_forward_matches_eager_without_recompiles() -> None:
    import torch._dynamo

    options = {"batch_buckets": [4], "sequence_bucket": 128}  # every prompt here fits 128
    eager = load_policy(ModelSpec(kind="vtla", preset="tiny", options=options), "cpu", "float32")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = load_policy(
        ModelSpec(kind="vtla", preset="tiny", options={**options, "compile": True}), "cpu", "float32"
    )
    for batch in batches():
        expected = eager.act(batch)  # type: ignore[arg-type]
        got = compiled.act(batch)  # type: ignore[arg-type]
        assert compiled.last_bucket == 4
        assert got.shape == expected.shape
        assert_close(got, expected)  # within BATCH_ATOL normalised units: other kernels, same math
        assert np.isfinite(got).all()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == 1, f"{graphs} graphs for one (batch, sequence) bucket: a recompile happened"
