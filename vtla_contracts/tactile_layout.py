"""Tactile layouts: the force/torque vector, and the touch scene's pad grid (adapter and touch expert).

Each finger pad carries a grid of MuJoCo ``touch`` sensors (normal force in newtons summed over
the sensor's site). The ``tactile.image`` sent to the bridge is ``(TACTILE_ROWS, TACTILE_COLS, 3)``
float32 newtons: channel 0 the left pad, channel 1 the right pad, channel 2 zero. Row 0 is the
top of the pad (nearest the palm), column 0 its -x edge. Torch- and mujoco-free.
"""

from __future__ import annotations

from typing import Final

import numpy as np

FORCE_TORQUE_DIM: Final = 6  # [fx, fy, fz] newtons, [tx, ty, tz] newton-metres
TACTILE_ROWS: Final = 4
TACTILE_COLS: Final = 4
LEFT_CHANNEL: Final = 0
RIGHT_CHANNEL: Final = 1


def touch_sensor_name(side: str, row: int, col: int) -> str:
    return f"touch_{side}_{row}{col}"


def tactile_image(left_n: np.ndarray, right_n: np.ndarray) -> np.ndarray:
    """Two pads' readings ((ROWS*COLS,) each, row-major) -> (ROWS, COLS, 3) float32."""
    cells = TACTILE_ROWS * TACTILE_COLS
    left = np.asarray(left_n, dtype=np.float32).reshape(-1)
    right = np.asarray(right_n, dtype=np.float32).reshape(-1)
    if left.shape != (cells,) or right.shape != (cells,):
        raise ValueError(f"tactile readings: expected {cells} values per pad, got {left.size} and {right.size}")
    image = np.zeros((TACTILE_ROWS, TACTILE_COLS, 3), dtype=np.float32)
    image[:, :, LEFT_CHANNEL] = left.reshape(TACTILE_ROWS, TACTILE_COLS)
    image[:, :, RIGHT_CHANNEL] = right.reshape(TACTILE_ROWS, TACTILE_COLS)
    return image


def pad_forces_n(image: np.ndarray) -> tuple[float, float]:
    """Total normal force on the (left, right) pad."""
    img = np.asarray(image, dtype=np.float64)
    return float(img[..., LEFT_CHANNEL].sum()), float(img[..., RIGHT_CHANNEL].sum())


def pads_in_contact(image: np.ndarray, threshold_n: float) -> bool:
    """Both pads press on something with more than ``threshold_n`` newtons."""
    left, right = pad_forces_n(image)
    return left > threshold_n and right > threshold_n
