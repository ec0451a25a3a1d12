"""Moondream's overlap-crop scheme: one global crop plus overlapping local tiles, and the stitch back.

The image is covered by ``rows x cols`` tiles of ``crop_size`` pixels that overlap by
``2 * overlap_margin`` patches; each tile's usable window is the crop minus its margins. After
the vision encoder, :func:`stitch_tiles` keeps each tile's window (plus the outer margins at the
image border) and lays them out as one feature map.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.moondream.config import VisionConfig

logger = logging.getLogger(__name__)

RESIZE_PYVIPS = "pyvips"  # what the official code uses (Lanczos 3): real-weight outputs match it
RESIZE_PILLOW = "pillow"  # the fallback when libvips is not importable (local tiles differ slightly)
# on the model's device: torch bicubic with antialiasing (no Lanczos in torch; close on smooth images)
RESIZE_DEVICE = "device-bicubic"
CROP_RESIZE_HOST = "host"  # [vlm.options] crop_resize: libvips/Pillow in the decode workers (reference)
CROP_RESIZE_DEVICE = "device"  # upload the image once as uint8 and resize the crops on the device
CROP_RESIZE_MODES = (CROP_RESIZE_HOST, CROP_RESIZE_DEVICE)


@dataclass(frozen=True)
class Tiling:
    rows: int
    cols: int

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols


def select_tiling(height_px: int, width_px: int, window_px: int, max_crops: int) -> Tiling:
    """How many tiles (rows, cols) of usable size ``window_px`` cover an image, at most ``max_crops``."""
    if height_px <= window_px or width_px <= window_px:
        return Tiling(1, 1)
    min_rows = math.ceil(height_px / window_px)
    min_cols = math.ceil(width_px / window_px)
    if min_rows * min_cols > max_crops:
        ratio = math.sqrt(max_crops / (min_rows * min_cols))
        rows, cols = max(1, math.floor(min_rows * ratio)), max(1, math.floor(min_cols * ratio))
        # Upstream stops here; for extreme aspect ratios (e.g. 2 x 40 minimum tiles) the clamp to
        # >= 1 can exceed max_crops. Trim the longer side so the bound always holds.
        if rows * cols > max_crops:
            if cols >= rows:
                cols = max(1, max_crops // rows)
            else:
                rows = max(1, max_crops // cols)
        return Tiling(rows, cols)
    # tiles following the aspect ratio, at least the minimum, scaled down when over budget
    rows = max(math.floor(math.sqrt(max_crops * height_px / width_px)), min_rows)
    cols = max(math.floor(math.sqrt(max_crops * width_px / height_px)), min_cols)
    if rows * cols > max_crops:
        if cols > rows:
            cols = math.floor(max_crops / rows)
        else:
            rows = math.floor(max_crops / cols)
    return Tiling(max(1, rows), max(1, cols))


def window_px(config: VisionConfig) -> int:
    """Usable (non-margin) side of a local crop in pixels (266 for the real model)."""
    return (config.grid - 2 * config.overlap_margin) * config.enc_patch_size


def tiling_for(height_px: int, width_px: int, config: VisionConfig) -> Tiling:
    margin2_px = 2 * config.overlap_margin * config.enc_patch_size
    return select_tiling(height_px - margin2_px, width_px - margin2_px, window_px(config), config.max_crops)


@functools.cache
def default_resize_backend() -> str:
    """``pyvips`` when importable (PyPI ``pyvips`` + ``pyvips-binary``), else ``pillow``."""
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError) as exc:
        logger.info("pyvips unavailable (%s): Moondream crops are resized with Pillow", exc)
        return RESIZE_PILLOW
    return RESIZE_PYVIPS


def resize_rgb(image_hw3: np.ndarray, width_px: int, height_px: int, backend: str) -> np.ndarray:
    """Lanczos resize of an (H, W, 3) uint8 image to (height_px, width_px, 3) uint8."""
    if backend == RESIZE_PYVIPS:
        import pyvips

        vips = pyvips.Image.new_from_array(np.ascontiguousarray(image_hw3))
        h, w = image_hw3.shape[:2]
        out = np.asarray(vips.resize(width_px / w, vscale=height_px / h).numpy(), dtype=np.uint8)
        if out.shape[:2] != (height_px, width_px):  # vips rounds the output size; keep ours exact
            fixed = np.zeros((height_px, width_px, out.shape[2]), dtype=np.uint8)
            fixed[: min(height_px, out.shape[0]), : min(width_px, out.shape[1])] = out[:height_px, :width_px]
            out = fixed
        return out
    if backend == RESIZE_PILLOW:
        return np.asarray(Image.fromarray(image_hw3).resize((width_px, height_px), Image.Resampling.LANCZOS))
    raise ValueError(f"unknown resize backend {backend!r}; expected {RESIZE_PYVIPS} or {RESIZE_PILLOW}")


def overlap_crops(
    image_hw3: np.ndarray, config: VisionConfig, backend: str | None = None
) -> tuple[np.ndarray, Tiling]:
    """(H, W, 3) uint8 -> crops (1 + rows*cols, crop, crop, 3) uint8 (global first) and the tiling.

    The image is resized (Lanczos; libvips like the official code, or Pillow: ``backend``, default
    :func:`default_resize_backend`) to exactly cover the tiles; the global crop is the whole image
    resized to one crop. Tiles are read row-major.
    """
    backend = backend or default_resize_backend()
    height_px, width_px = image_hw3.shape[:2]
    crop = config.crop_size
    window = window_px(config)
    margin2_px = 2 * config.overlap_margin * config.enc_patch_size
    tiling = tiling_for(height_px, width_px, config)

    target_h = tiling.rows * window + margin2_px
    target_w = tiling.cols * window + margin2_px
    resized = resize_rgb(image_hw3, target_w, target_h, backend)
    crops = np.zeros((1 + tiling.n_tiles, crop, crop, image_hw3.shape[2]), dtype=np.uint8)
    crops[0] = resize_rgb(image_hw3, crop, crop, backend)
    for row in range(tiling.rows):
        for col in range(tiling.cols):
            y0, x0 = row * window, col * window
            region = resized[y0 : y0 + crop, x0 : x0 + crop]
            crops[1 + row * tiling.cols + col, : region.shape[0], : region.shape[1]] = region
    return crops, tiling


def upload_image(image_hw3: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> the same on ``device``, copied once: through pinned memory, non-blocking, on CUDA.

    The pinned buffer comes from torch's caching host allocator, which keeps it until the copy
    queued on the current stream has finished.
    """
    host = torch.from_numpy(np.ascontiguousarray(image_hw3))
    if device.type != "cuda":
        return host.to(device)
    pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
    pinned.copy_(host)
    return pinned.to(device, non_blocking=True)


def _resize_on_device(image_hw3: torch.Tensor, height_px: int, width_px: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (height_px, width_px, 3): bicubic with antialiasing, in float32."""
    x = image_hw3.permute(2, 0, 1)[None].to(torch.float32)
    y = torch.nn.functional.interpolate(
        x, size=(height_px, width_px), mode="bicubic", antialias=True, align_corners=False
    )
    return y.clamp_(0.0, 255.0).round_().to(torch.uint8)[0].permute(1, 2, 0)


def overlap_crops_on_device(image_hw3: torch.Tensor, config: VisionConfig) -> tuple[torch.Tensor, Tiling]:
    """:func:`overlap_crops` with the resizes on the image's device -> uint8 (N, crop, crop, 3) there.

    Same geometry as the reference; the resampling filter differs (bicubic + antialias instead
    of Lanczos 3), so tiles agree with the reference within a few grey levels on smooth images.
    """
    height_px, width_px = int(image_hw3.shape[0]), int(image_hw3.shape[1])
    crop = config.crop_size
    window = window_px(config)
    margin2_px = 2 * config.overlap_margin * config.enc_patch_size
    tiling = tiling_for(height_px, width_px, config)
    resized = _resize_on_device(image_hw3, tiling.rows * window + margin2_px, tiling.cols * window + margin2_px)
    tiles = [
        resized[row * window : row * window + crop, col * window : col * window + crop]
        for row in range(tiling.rows)
        for col in range(tiling.cols)
    ]  # the target size makes every tile a full crop
    return torch.stack([_resize_on_device(image_hw3, crop, crop), *tiles]), tiling


def crops_to_tensor(
    crops_nhw3: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """uint8 (N, H, W, 3) (host array, or a tensor already on the device) -> (N, 3, H, W) in [-1, 1]."""
    if isinstance(crops_nhw3, torch.Tensor):
        x = crops_nhw3.to(device=device)
    else:
        x = torch.from_numpy(np.ascontiguousarray(crops_nhw3)).to(device=device)
    x = x.permute(0, 3, 1, 2).to(dtype=torch.float32).div_(127.5).sub_(1.0)
    return x.to(dtype=dtype)


def stitch_tiles(tiles_nggc: torch.Tensor, tiling: Tiling, margin: int) -> torch.Tensor:
    """Lay local tile features (n, g, g, C) out as one map ((rows*(g-2m)+2m), (cols*(g-2m)+2m), C).

    Each tile contributes its window; tiles on the image border also keep their outer margin.
    """
    n, grid, grid_w, channels = tiles_nggc.shape
    if n != tiling.n_tiles or grid != grid_w:
        raise ValueError(f"expected {tiling.n_tiles} square tiles, got shape {tuple(tiles_nggc.shape)}")
    step = grid - 2 * margin
    out = tiles_nggc.new_zeros((tiling.rows * step + 2 * margin, tiling.cols * step + 2 * margin, channels))
    for index in range(n):
        row, col = divmod(index, tiling.cols)
        y_start = 0 if row == 0 else margin
        y_end = grid if row == tiling.rows - 1 else grid - margin
        x_start = 0 if col == 0 else margin
        x_end = grid if col == tiling.cols - 1 else grid - margin
        out_y, out_x = row * step, col * step
        out[out_y + y_start : out_y + y_end, out_x + x_start : out_x + x_end] = tiles_nggc[
            index, y_start:y_end, x_start:x_end
        ]
    return out
