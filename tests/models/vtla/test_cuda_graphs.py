"""On CUDA: the VTLA's captured (batch bucket, length) graphs give the eager forward's actions; act's stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.vtla.serving import load_policy
from tests.models.vtla.conftest import force_torque, make_image, make_obs
from vtla_contracts.model_spec import ModelSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
OPTIONS = {"batch_buckets": [1, 2, 4]}


def test_warmup_captures_every_shape_and_replay_equals_eager() -> None:
    graphs = load_policy(ModelSpec(kind="vtla", preset="tiny", options=OPTIONS), "cuda", "float32")
    graphs.warmup()
    assert graphs.static is not None
    assert len(graphs.static.shapes()) == len(graphs.batch_buckets) * len(graphs.sequence_lengths())
    assert graphs.static.graphs_captured == len(graphs.static.shapes())
    eager = load_policy(
        ModelSpec(kind="vtla", preset="tiny", options={**OPTIONS, "static_inputs": False}), "cuda", "float32"
    )
    eager.model.load_state_dict(graphs.model.state_dict())
    for rows in (1, 3, 4):
        batch = [
            make_obs(i, instruction="pick " * (i + 1), force_torque=force_torque(i),
                     tactile_image=make_image(32, 32, seed=i) if i % 2 else None)
            for i in range(rows)
        ]
        np.testing.assert_allclose(graphs.act(batch), eager.act(batch), atol=1e-4, rtol=0)
    assert graphs.describe()["cuda_graphs"] is True


def test_act_runs_on_a_high_priority_stream() -> None:
    policy = load_policy(ModelSpec(kind="vtla", preset="tiny"), "cuda", "float32")
    assert policy._stream is not None
    assert policy._stream.priority < torch.cuda.Stream().priority  # higher than a default-priority stream
    before = torch.cuda.current_stream()
    policy.act([make_obs(0)])
    assert torch.cuda.current_stream() == before  # the stream context does not leak
