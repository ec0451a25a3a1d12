"""Shared builders for the Moondream tests: a tiny random model, images, requests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.interfaces import GenerationEvent, GenerationRequest, GenerationSettings, ModelInfo
from models.moondream.config import preset_config
from models.moondream.generator import MoondreamGenerator
from models.moondream.serving import _tiny_tokenizer_config, random_model
from models.moondream.tokenizer import build_tiny_tokenizer

MakeGenerator = Callable[..., MoondreamGenerator]


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def request(key: int, skill: str, seed: int = 0, **kwargs: object) -> GenerationRequest:
    settings = kwargs.pop("settings", None) or GenerationSettings(max_tokens=12, max_objects=3)
    text = kwargs.pop("text", "a red cube" if skill != "caption" else None)
    image = kwargs.pop("image", None)
    if image is None:
        image = make_image(90 + 7 * seed, 120 + 5 * seed, seed)
    return GenerationRequest(key=key, skill=skill, image=image, text=text, settings=settings, **kwargs)  # type: ignore[arg-type]


def run_to_end(generator: MoondreamGenerator, max_steps: int = 500) -> list[GenerationEvent]:
    events: list[GenerationEvent] = []
    for _ in range(max_steps):
        if not generator.active():
            return events
        events.extend(generator.step())
    raise AssertionError("generation did not finish")


@pytest.fixture
def make_generator() -> MakeGenerator:
    """Tiny random-weight generators; float64 by default so batched and single runs agree exactly."""

    def make(max_sequences: int = 4, dtype: torch.dtype = torch.float64, seed: int = 0) -> MoondreamGenerator:
        tokenizer = build_tiny_tokenizer()
        config = _tiny_tokenizer_config(preset_config("tiny"), tokenizer).validate()
        model = random_model(config, torch.device("cpu"), dtype, seed)
        info = ModelInfo(
            "moondream2-tiny", "moondream", "cpu", str(dtype), True, model.parameter_count(), "tiny"
        )
        return MoondreamGenerator(model, tokenizer, info, max_sequences=max_sequences, seed=seed)

    return make
