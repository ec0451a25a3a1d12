"""Image preprocessing on the device: exact at the native size, PIL-like when resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.vtla.preprocess import HostStaging, images_to_pixels, pad_token_ids
from tests.models.vtla.conftest import make_image

HALF = (0.5, 0.5, 0.5)


def to_pixels(images: list[np.ndarray], size: int, mode: str = "bicubic") -> np.ndarray:
    staged = HostStaging(torch.device("cpu")).to_device(images, slot="camera")
    return images_to_pixels(staged, size, HALF, HALF, mode, torch.float32).numpy()


def test_native_size_is_exact_siglip_normalisation() -> None:
    image = make_image(64, 64, seed=1)
    got = to_pixels([image], 64)[0]
    want = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(got, want.transpose(2, 0, 1), atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "pil"), [("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR)]
)
def test_resize_matches_pil_within_rounding(mode: str, pil: Image.Resampling) -> None:
    # A smooth image (gradients), as camera frames are: resampling kernels agree to rounding.
    yy, xx = np.mgrid[0:180, 0:240]
    image = np.stack([xx * 255 // 239, yy * 255 // 179, (xx + yy) * 255 // 418], axis=-1).astype(np.uint8)
    got = to_pixels([image], 64, mode)[0]
    ref = np.asarray(Image.fromarray(image).resize((64, 64), pil)).astype(np.float32)
    want = ((ref / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    assert np.abs(got - want).max() <= 2 * 2 / 255  # two intensity levels


def test_float_input_is_taken_as_unit_range() -> None:
    image = make_image(32, 32, seed=2)
    as_float = image.astype(np.float32) / 255.0
    np.testing.assert_allclose(
        to_pixels([as_float], 16, "bilinear"), to_pixels([image], 16, "bilinear"), atol=2 * 2 / 255
    )
    np.testing.assert_allclose(to_pixels([as_float], 32), to_pixels([image], 32), atol=1e-6)


def test_batch_rows_stay_in_order() -> None:
    images = [make_image(40, 50, seed=s) for s in range(3)]
    together = to_pixels(images, 32)
    for row, image in enumerate(images):
        # a batch of 3 vs a batch of 1: resize kernels may vectorise differently; same pixels within 1e-6
        np.testing.assert_allclose(together[row], to_pixels([image], 32)[0], atol=1e-6)


def test_pad_token_ids_right_pads() -> None:
    ids = pad_token_ids([(5, 6, 7), (), (9,)], torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [0, 0, 0], [9, 0, 0]]
    assert pad_token_ids([(), ()], torch.device("cpu")).shape == (2, 0)
