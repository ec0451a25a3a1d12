"""Crops resized on the model's device (``crop_resize = "device"``) against the libvips/Pillow reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.interfaces import GenerationSettings
from models.moondream.admission_plan import AdmissionOptions
from models.moondream.config import preset_config
from models.moondream.crops import (
    RESIZE_PILLOW,
    RESIZE_PYVIPS,
    default_resize_backend,
    overlap_crops,
    overlap_crops_on_device,
    upload_image,
)
from tests.models.moondream.conftest import request, run_to_end
from tests.models.moondream.test_admission import generator

# bicubic + antialias vs Lanczos 3 on a smooth image: grey levels (of 255) per pixel
MAX_DIFF_LEVELS = 4
MEAN_DIFF_LEVELS = 1.0


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 127 + 90 * np.sin(x / width * 2 * np.pi) * np.cos(y / height * 1.5 * np.pi)
    return np.clip(np.stack([red, 255 * x / width, 255 * (1 - y / height)], -1), 0, 255).round().astype(np.uint8)


def backends() -> list[str]:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return [RESIZE_PILLOW]
    return [RESIZE_PYVIPS, RESIZE_PILLOW]


@pytest.mark.parametrize("preset", ["tiny", "moondream2-2025-04-14"])
@pytest.mark.parametrize("size", [(90, 120), (480, 640), (300, 1000)])
@pytest.mark.parametrize("backend", backends())
def test_device_tiles_match_the_reference_on_a_smooth_image(
    preset: str, size: tuple[int, int], backend: str
) -> None:
    config = preset_config(preset).vision
    image = smooth_image(*size)
    want, tiling = overlap_crops(image, config, backend)
    got, got_tiling = overlap_crops_on_device(upload_image(image, torch.device("cpu")), config)
    assert got_tiling == tiling
    assert got.dtype == torch.uint8 and tuple(got.shape) == want.shape
    diff = np.abs(got.numpy().astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= MAX_DIFF_LEVELS and diff.mean() <= MEAN_DIFF_LEVELS


def test_device_tiles_differ_from_a_wrong_image() -> None:
    config = preset_config("tiny").vision
    image = smooth_image(90, 120)
    want, _ = overlap_crops(image, config, default_resize_backend())
    got, _ = overlap_crops_on_device(upload_image(image[:, ::-1].copy(), torch.device("cpu")), config)
    assert np.abs(got.numpy().astype(np.int16) - want.astype(np.int16)).max() > 50


def test_generation_with_device_resize() -> None:
    gen = generator(AdmissionOptions(crop_resize="device"), dtype=torch.float32)
    settings = GenerationSettings(max_tokens=6, max_objects=2)
    requests = [
        gen.prepare(request(k, skill, image=smooth_image(90 + 30 * k, 120), settings=settings))
        for k, skill in enumerate(("caption", "query", "detect", "point"), start=1)
    ]
    assert all(r.prepared is None for r in requests)  # nothing done in the decode workers
    for r in requests:
        gen.admit(r)
    assert all(isinstance(adm.crops, torch.Tensor) for adm in gen._admitting.values())
    results = {e.key: e.result for e in run_to_end(gen) if e.result}
    assert set(results) == {1, 2, 3, 4}
    assert "caption" in results[1] and "answer" in results[2]
    assert "objects" in results[3] and "points" in results[4]
    assert gen.describe()["image_resize"] == "device-bicubic"
