"""De-normalisation math (mean/std and quantile with a mask) and the stats payload."""

from __future__ import annotations

import numpy as np
import torch

from models.vtla.config import ActionConfig, Normalization
from models.vtla.normalization import ActionDenormalizer, denormalize_np, stats_payload

QUANTILE = Normalization(
    type="quantile",
    mean=(0.0,) * 7,
    std=(1.0,) * 7,
    q01=(-0.02, -0.02, -0.01, -0.1, -0.1, -0.2, 0.0),
    q99=(0.02, 0.04, 0.03, 0.1, 0.3, 0.2, 1.0),
    mask=(True, True, True, True, True, True, False),
)


def test_mean_std_by_hand() -> None:
    norm = Normalization(mean=(1.0, 2.0, 0, 0, 0, 0, 0.5), std=(0.5, 2.0, 1, 1, 1, 1, 0.25))
    out = denormalize_np(np.array([[2.0, -1.0, 0, 0, 0, 0, 1.0]]), norm)
    np.testing.assert_allclose(out, [[2.0, 0.0, 0, 0, 0, 0, 0.75]])


def test_quantile_by_hand() -> None:
    n = np.array([-1.0, 1.0, 0.0, 0.5, -0.5, 0.0, 0.3])
    out = denormalize_np(n, QUANTILE)
    expected = [-0.02, 0.04, 0.01, 0.05, 0.0, 0.0, 0.3]  # q01 at -1, q99 at +1, mid at 0; last dim unmasked
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_device_denormalizer_matches_reference_and_clips_gripper() -> None:
    rng = np.random.default_rng(0)
    n = rng.normal(size=(3, 4, 7)).astype(np.float32) * 3
    for norm in (Normalization(), QUANTILE):
        denorm = ActionDenormalizer(ActionConfig(normalization=norm), torch.device("cpu"))
        got = denorm(torch.from_numpy(n)).numpy()
        want = denormalize_np(n, norm)
        want[..., 6] = np.clip(want[..., 6], 0, 1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert got[..., 6].min() >= 0 and got[..., 6].max() <= 1


def test_stats_payload_shapes() -> None:
    plain = stats_payload(Normalization())
    assert set(plain) == {"mean", "std", "description", "type"}
    assert plain["description"] == {
        "0-2": "translation (dx, dy, dz) in meters",
        "3-5": "rotation (droll, dpitch, dyaw) in radians",
        "6": "gripper (0=open, 1=closed)",
    }
    quant = stats_payload(QUANTILE)
    assert quant["type"] == "quantile" and quant["q99"][1] == 0.04 and quant["mask"][6] is False
