"""Region head math: Fourier features, coordinate and size bins, boxes."""

from __future__ import annotations

import math

import pytest
import torch

from models.moondream.config import RegionConfig, preset_config
from models.moondream.region import RegionHead, box_from_center, fourier_features, size_from_bins


def test_fourier_features_are_cos_then_sin_of_2pi_x_w() -> None:
    freqs = torch.tensor([[0.5, 2.0, -1.0]])
    x = torch.tensor([[0.25]])
    feats = fourier_features(x, freqs)
    angles = [2 * math.pi * 0.25 * f for f in (0.5, 2.0, -1.0)]
    expected = [math.cos(a) for a in angles] + [math.sin(a) for a in angles]
    assert feats.shape == (1, 6)
    torch.testing.assert_close(feats[0], torch.tensor(expected))


def test_size_fourier_features_mix_width_and_height() -> None:
    freqs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # feature 0 sees width, feature 1 height
    feats = fourier_features(torch.tensor([[0.25, 0.5]]), freqs)
    torch.testing.assert_close(feats[0], torch.tensor([0.0, -1.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_size_bins_are_log_scale_from_2_pow_minus_10_to_1() -> None:
    config = RegionConfig()  # 1024 bins
    bins = torch.tensor([[0, 1023], [511, 1023]])
    sizes = size_from_bins(bins, config)
    torch.testing.assert_close(sizes[0], torch.tensor([2.0**-10, 1.0]))
    torch.testing.assert_close(sizes[1, 0], torch.tensor(2.0 ** (511 / 1023 * 10 - 10)))


def test_coordinate_decoding_is_argmax_bin_over_bins() -> None:
    config = preset_config("tiny").region
    head = RegionHead(config)
    with torch.no_grad():
        head.coord_decoder.fc2.weight.zero_()
        head.coord_decoder.fc2.bias.zero_()
        head.coord_decoder.fc2.bias[48] = 5.0
    coord = head.decode_coord(torch.randn(3, config.dim))
    torch.testing.assert_close(coord, torch.full((3,), 48 / config.coord_out_dim))


def test_size_decoding_reads_width_then_height_halves() -> None:
    config = preset_config("tiny").region
    head = RegionHead(config)
    bins = config.size_bins
    with torch.no_grad():
        head.size_decoder.fc2.weight.zero_()
        head.size_decoder.fc2.bias.zero_()
        head.size_decoder.fc2.bias[bins - 1] = 5.0  # width: top bin -> 1.0
        head.size_decoder.fc2.bias[bins + 0] = 5.0  # height: bottom bin -> 2^-10
    size = head.decode_size(torch.randn(2, config.dim))
    torch.testing.assert_close(size, torch.tensor([[1.0, 2.0**-10]] * 2))


def test_encoders_map_values_to_text_width() -> None:
    config = preset_config("tiny").region
    head = RegionHead(config)
    assert head.encode_coord(torch.tensor([0.1, 0.9])).shape == (2, config.dim)
    assert head.encode_size(torch.tensor([[0.1, 0.2]])).shape == (1, config.dim)
    assert tuple(head.coord_features.shape) == (1, config.coord_feat_dim // 2)
    assert tuple(head.size_features.shape) == (2, config.size_feat_dim // 2)


@pytest.mark.parametrize(
    ("center", "size", "expected"),
    [
        ((0.5, 0.5), (0.2, 0.4), (0.4, 0.3, 0.6, 0.7)),
        ((0.05, 0.95), (0.2, 0.2), (0.0, 0.85, 0.15, 1.0)),  # clipped to the image
    ],
)
def test_box_from_center(
    center: tuple[float, float], size: tuple[float, float], expected: tuple[float, ...]
) -> None:
    box = box_from_center(center[0], center[1], size[0], size[1])
    assert [box[k] for k in ("x_min", "y_min", "x_max", "y_max")] == pytest.approx(expected)
