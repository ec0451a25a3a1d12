"""Overlap-crop geometry (real 378 px / 14 px / margin 4 / 12 crops numbers) and the stitch back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.moondream.config import VisionConfig, preset_config
from models.moondream.crops import (
    RESIZE_PILLOW,
    RESIZE_PYVIPS,
    Tiling,
    default_resize_backend,
    overlap_crops,
    stitch_tiles,
    tiling_for,
    window_px,
)
from tests.models.moondream.conftest import make_image

REAL = VisionConfig()


def test_real_window_is_19_patches() -> None:
    assert REAL.grid == 27 and REAL.tokens_per_crop == 729
    assert window_px(REAL) == 266  # (27 - 2*4) * 14


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (100, 100, (1, 1)),  # small: one local tile
        (378, 378, (1, 1)),  # exactly one window plus margins
        (2000, 300, (1, 1)),  # one side within a window
        (480, 640, (2, 4)),  # aspect-ratio tiles
        (800, 800, (3, 3)),
        (1000, 600, (4, 2)),
        (600, 1300, (2, 5)),
        (1080, 1920, (2, 4)),  # minimum tiles exceed 12: proportional reduction
        (392, 1612, (2, 6)),  # aspect tiles exceed 12: the larger side is scaled down
    ],
)
def test_tiling_for_real_config(height: int, width: int, expected: tuple[int, int]) -> None:
    tiling = tiling_for(height, width, REAL)
    assert (tiling.rows, tiling.cols) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 16))
def test_tiling_never_exceeds_max_crops(height: int, width: int, max_crops: int) -> None:
    config = VisionConfig(max_crops=max_crops)
    tiling = tiling_for(height, width, config)
    assert 1 <= tiling.n_tiles <= max_crops


def reference_resize(image: np.ndarray, width: int, height: int, backend: str) -> np.ndarray:
    """Each library called directly, as the official code (pyvips) or the fallback (Pillow) does."""
    if backend == RESIZE_PYVIPS:
        import pyvips

        vips = pyvips.Image.new_from_array(image)
        return np.asarray(vips.resize(width / image.shape[1], vscale=height / image.shape[0]).numpy())
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


@pytest.mark.parametrize("backend", [RESIZE_PYVIPS, RESIZE_PILLOW])
@pytest.mark.parametrize(("height", "width"), [(480, 640), (300, 200), (900, 500)])
def test_crops_cut_from_the_resized_image(height: int, width: int, backend: str) -> None:
    image = make_image(height, width, seed=height)
    crops, tiling = overlap_crops(image, REAL, backend=backend)
    assert crops.shape == (1 + tiling.n_tiles, 378, 378, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], reference_resize(image, 378, 378, backend))
    target = (tiling.cols * 266 + 112, tiling.rows * 266 + 112)
    resized = reference_resize(image, *target, backend)
    for row in range(tiling.rows):
        for col in range(tiling.cols):
            expected = resized[row * 266 : row * 266 + 378, col * 266 : col * 266 + 378]
            np.testing.assert_array_equal(crops[1 + row * tiling.cols + col], expected)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (2, 3), (3, 2), (1, 4)])
def test_stitch_keeps_windows_and_outer_margins(rows: int, cols: int) -> None:
    grid, margin = 27, 4
    step = grid - 2 * margin
    # feature = (tile index, local y, local x), so every output cell names its source
    index = torch.arange(rows * cols, dtype=torch.float32)[:, None, None].expand(-1, grid, grid)
    local_y = torch.arange(grid, dtype=torch.float32)[None, :, None].expand(rows * cols, -1, grid)
    local_x = torch.arange(grid, dtype=torch.float32)[None, None, :].expand(rows * cols, grid, -1)
    tiles = torch.stack([index, local_y, local_x], dim=-1)
    out = stitch_tiles(tiles, Tiling(rows, cols), margin)
    assert out.shape == (rows * step + 2 * margin, cols * step + 2 * margin, 3)
    for y in range(out.shape[0]):
        row = min(max((y - margin) // step, 0), rows - 1)
        for x in range(out.shape[1]):
            col = min(max((x - margin) // step, 0), cols - 1)
            expected = (row * cols + col, y - row * step, x - col * step)
            assert tuple(out[y, x].tolist()) == expected, (y, x)


def test_tiny_vision_tokens_have_text_width() -> None:
    from models.moondream.model import MoondreamModel, init_random_weights

    config = preset_config("tiny")
    model = MoondreamModel(config)
    init_random_weights(model, seed=0)
    for shape in [(30, 40), (200, 333), (64, 64)]:
        tokens = model.vision.embed_image(make_image(*shape))
        assert tokens.shape == (config.vision.tokens_per_crop, config.text.dim)
        assert torch.isfinite(tokens).all()


def test_pyvips_is_the_default_when_importable_and_differs_from_pillow_on_texture() -> None:
    pytest.importorskip("pyvips")
    assert default_resize_backend() == RESIZE_PYVIPS
    image = make_image(480, 640, seed=5)  # noise: the kernels' differences show
    vips, _ = overlap_crops(image, REAL, backend=RESIZE_PYVIPS)
    pil, _ = overlap_crops(image, REAL, backend=RESIZE_PILLOW)
    assert vips.shape == pil.shape
    assert np.abs(vips.astype(int) - pil.astype(int)).max() > 0
    smooth = np.broadcast_to(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 640, 3)).copy()
    a, _ = overlap_crops(smooth, REAL, backend=RESIZE_PYVIPS)
    b, _ = overlap_crops(smooth, REAL, backend=RESIZE_PILLOW)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3  # both Lanczos: alike on a smooth ramp


def test_pillow_is_the_fallback_without_pyvips(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyvips(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyvips":
            raise ImportError("no pyvips here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    default_resize_backend.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_pyvips)
    try:
        assert default_resize_backend() == RESIZE_PILLOW
    finally:
        monkeypatch.undo()
        default_resize_backend.cache_clear()
    with pytest.raises(ValueError, match="unknown resize backend"):
        overlap_crops(make_image(10, 10), REAL, backend="opencv")
