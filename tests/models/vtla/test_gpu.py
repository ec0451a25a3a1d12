"""bf16 on CUDA: runs where a GPU exists (``pytest -m gpu``), skipped elsewhere."""

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
ACTION_STD = np.array([0.005, 0.0066, 0.0068, 0.0136, 0.0172, 0.0182, 0.021])


def normalised_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b) / ACTION_STD).max())


def test_bf16_cuda_agrees_with_fp32_cpu() -> None:
    gpu = load_policy(ModelSpec(kind="vtla"), "cuda", "bfloat16")
    cpu = load_policy(ModelSpec(kind="vtla"), "cpu", "float32")
    assert gpu.info.dtype == "bfloat16" and gpu.info.device.startswith("cuda")
    assert next(gpu.model.parameters()).dtype == torch.bfloat16
    batch = [make_obs(i, instruction=f"task {i}", force_torque=force_torque(i)) for i in range(8)]
    got, want = gpu.act(batch), cpu.act(batch)
    assert got.dtype == np.float32 and got.shape == (8, 4, 7) and np.isfinite(got).all()
    # Random weights are drawn per device, so compare the same weights: copy CPU's into the GPU model.
    gpu.model.load_state_dict(cpu.model.state_dict())
    got = gpu.act(batch)
    assert normalised_diff(got, want) < 0.1  # bf16 has ~3 significant digits


def test_bf16_batch_matches_one_by_one_and_inputs_matter() -> None:
    gpu = load_policy(ModelSpec(kind="vtla"), "cuda", "bfloat16")
    batch = [
        make_obs(i, size=(480, 640), instruction="x" * (i + 1), force_torque=force_torque(i))
        for i in range(4)
    ]
    together = gpu.act(batch)
    alone = np.concatenate([gpu.act([obs]) for obs in batch])
    assert normalised_diff(together, alone) < 0.05
    a = gpu.act([make_obs(0, instruction="pick")])
    b = gpu.act([make_obs(0, instruction="place")])
    c = gpu.act([make_obs(0, instruction="pick", tactile_image=make_image(32, 32, seed=4))])
    assert normalised_diff(a, b) > 1e-3 and normalised_diff(a, c) > 1e-3
    gpu.warmup()
