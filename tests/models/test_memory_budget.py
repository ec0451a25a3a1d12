"""Memory budget: reported in describe() (hello), and a configuration that cannot fit is refused by name."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, config_from_mapping
from models.memory_budget import MemoryBudget, MemoryBudgetError, check_fits
from models.vtla.frame_ring import DEFAULT_FRAME_RING_ROWS
from models.vtla.serving import load_policy
from tests.models.moondream.conftest import MakeGenerator, make_generator  # noqa: F401 (fixture)
from vtla_contracts.model_spec import ModelSpec


def test_generator_and_policy_report_weights_kv_cache_and_largest_activation(
    make_generator: MakeGenerator,  # noqa: F811 (the fixture imported above)
) -> None:
    generator = make_generator(max_sequences=3)
    memory = generator.describe()["memory"]
    assert memory["kv_cache_bytes"] == generator.cache.nbytes > 0
    assert memory["weights_bytes"] == generator.info.parameters * 8  # the fixture's float64
    assert memory["largest_activation_bytes"] > 0
    parts = ("weights_bytes", "kv_cache_bytes", "largest_activation_bytes", "staging_bytes")
    assert memory["total_bytes"] == sum(memory[k] for k in parts)
    assert memory["staging_bytes"] == 0
    small = load_policy(ModelSpec(kind="vtla", preset="tiny", options={"batch_buckets": [1, 2]}), "cpu", "float32")
    large = load_policy(ModelSpec(kind="vtla", preset="tiny"), "cpu", "float32")
    m_small, m_large = small.describe()["memory"], large.describe()["memory"]
    assert m_small["weights_bytes"] == small.info.parameters * 4 and m_small["kv_cache_bytes"] == 0
    assert m_large["largest_activation_bytes"] == 32 * m_small["largest_activation_bytes"]  # bucket 64 vs 2
    # the frame rings (one per camera, frame_ring_rows input-size uint8 frames) are in the budget
    size, cameras = large.cfg.vision.image_size, len(large.cfg.cameras)
    assert m_large["staging_bytes"] == cameras * DEFAULT_FRAME_RING_ROWS * size * size * 3
    assert m_large["total_bytes"] == sum(m_large[k] for k in parts)
    rows_8 = load_policy(ModelSpec(kind="vtla", preset="tiny", options={"frame_ring_rows": 8}), "cpu", "float32")
    assert rows_8.describe()["memory"]["staging_bytes"] == cameras * 8 * size * size * 3
    unstaged = load_policy(ModelSpec(kind="vtla", preset="tiny", options={"stage_frames": False}), "cpu", "float32")
    assert unstaged.describe()["memory"]["staging_bytes"] == 0


def test_a_budget_over_the_free_memory_names_the_option() -> None:
    budget = MemoryBudget(weights_bytes=4 << 30, kv_cache_bytes=6 << 30, largest_activation_bytes=1 << 30)
    check_fits(budget, 12 << 30, "moondream", "[vlm.options] max_sequences or context")
    with pytest.raises(MemoryBudgetError, match=r"needs 11.00 GiB .* lower \[vlm.options\] max_sequences"):
        check_fits(budget, 8 << 30, "moondream", "[vlm.options] max_sequences or context")


def test_float16_is_refused_at_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"device\.dtype"):
        config_from_mapping({"device": {"dtype": "float16"}})
    assert config_from_mapping({"device": {"dtype": "bfloat16"}}).device.dtype == "bfloat16"


def test_unknown_policy_option_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown \[policy\.options\]"):
        load_policy(ModelSpec(kind="vtla", preset="tiny", options={"batch_bucket": [1]}), "cpu", "float32")
