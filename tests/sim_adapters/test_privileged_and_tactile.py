from __future__ import annotations

import numpy as np
import pytest

from vtla_contracts.privileged_state import PROPRIO_DIM, PROPRIO_FIELDS, PrivilegedState
from vtla_contracts.tactile_layout import TACTILE_COLS, TACTILE_ROWS, pad_forces_n, pads_in_contact, tactile_image


def state() -> PrivilegedState:
    return PrivilegedState(
        eef_pos=np.array([0.1, 0.2, 0.3]),
        eef_quat=np.array([0.0, 0.0, 0.0, 1.0]),
        gripper_width=0.08,
        object_pos=np.array([0.4, 0.5, 0.6]),
        object_quat=np.array([0.0, 0.0, 1.0, 0.0]),
        object_width=0.04,
        target_pos=np.array([0.7, 0.8, 0.9]),
    )


def test_layout_dimension_matches_fields():
    assert PROPRIO_DIM == sum(n for _, n in PROPRIO_FIELDS) == 19


def test_pack_unpack_round_trip():
    vec = state().pack()
    assert vec.dtype == np.float32 and vec.shape == (PROPRIO_DIM,)
    back = PrivilegedState.unpack(vec)
    np.testing.assert_allclose(back.target_pos, [0.7, 0.8, 0.9], atol=1e-6)
    assert back.gripper_width == pytest.approx(0.08) and back.object_width == pytest.approx(0.04)


@pytest.mark.parametrize("vec", [np.zeros(PROPRIO_DIM - 1), np.full(PROPRIO_DIM, np.inf)])
def test_unpack_rejects_bad_vectors(vec):
    with pytest.raises(ValueError):
        PrivilegedState.unpack(vec)


def test_tactile_image_channels_and_contact():
    cells = TACTILE_ROWS * TACTILE_COLS
    left = np.zeros(cells)
    left[5] = 1.5
    right = np.full(cells, 0.1)
    image = tactile_image(left, right)
    assert image.shape == (TACTILE_ROWS, TACTILE_COLS, 3) and image.dtype == np.float32
    assert image[1, 1, 0] == pytest.approx(1.5) and image[..., 2].sum() == 0
    assert pad_forces_n(image) == pytest.approx((1.5, 1.6))
    assert pads_in_contact(image, 1.0)
    assert not pads_in_contact(image, 1.55)
    with pytest.raises(ValueError):
        tactile_image(left[:-1], right)
