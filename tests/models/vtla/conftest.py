"""Shared builders for the VTLA tests: the tiny random policy and observations."""

from __future__ import annotations

import numpy as np
import pytest

from models.interfaces import Observation
from models.vtla.serving import VTLAPolicy, load_policy
from vtla_contracts.model_spec import ModelSpec


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def make_obs(seed: int = 0, size: tuple[int, int] = (96, 128), **kwargs: object) -> Observation:
    return Observation(images={"primary": make_image(*size, seed=seed)}, **kwargs)  # type: ignore[arg-type]


def force_torque(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=6).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_policy() -> VTLAPolicy:
    return load_policy(ModelSpec(kind="vtla", preset="tiny"), "cpu", "float32")
