"""Config: defaults match configs/default.toml, and every bad key is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError, config_from_mapping, load_config, with_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_default_toml_equals_builtin_defaults() -> None:
    assert load_config(ROOT / "configs" / "default.toml") == BridgeConfig()


def test_every_shipped_config_loads() -> None:
    paths = sorted((ROOT / "configs").glob("*.toml"))
    assert paths
    for path in paths:
        load_config(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"server": {"max_batch": 4}}, "[server]: unknown key(s) ['max_batch']"),
        ({"batching": {"max_batch": "8"}}, "batching.max_batch: expected an integer, got '8'"),
        ({"batching": {"max_batch": 0}}, "batching.max_batch: must be > 0"),
        ({"batching": {"max_wait_ms": -1}}, "batching.max_wait_ms: must be >= 0"),
        ({"server": {"bind": "localhost:5555"}}, "server.bind: expected tcp://"),
        ({"server": {"auth_tokens": "secret"}}, "server.auth_tokens: expected a list of strings"),
        ({"device": {"dtype": "int8"}}, "device.dtype"),
        ({"policy": {"hub_download": "yes"}}, "policy.hub_download: expected true/false"),
        ({"polciy": {}}, "top level: unknown key(s) ['polciy']"),
        ({"http": {"port": 70000}}, "http.port"),
        ({"scheduler": {"anticipation_share": 1.0}}, "scheduler.anticipation_share: must be in [0, 1)"),
    ],
)
def test_bad_values_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(table)
    assert message in str(info.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[batching]\nmax_batch = 'x'\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: batching\.max_batch"):
        load_config(bad)
    bad.write_text("[batching\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_options_table_reaches_the_model_spec() -> None:
    cfg = config_from_mapping({"vlm": {"options": {"max_sequences": 16}}, "policy": {"kind": "expert-lift"}})
    assert cfg.vlm.spec().options["max_sequences"] == 16
    assert cfg.policy.spec().kind == "expert-lift"
    with pytest.raises(TypeError):
        cfg.vlm.spec().options["max_sequences"] = 1  # type: ignore[index]


def test_server_tokens_come_from_the_environment_without_touching_the_rest() -> None:
    from bridge.config import SERVER_TOKENS_ENV, with_environment

    base = with_overrides(BridgeConfig(), server={"auth_tokens": ("from-toml",)})
    assert with_environment(base, {}) is base
    merged = with_environment(base, {SERVER_TOKENS_ENV: " a, b ,,from-toml"})
    assert merged.server.auth_tokens == ("from-toml", "a", "b")
    assert merged.batching == base.batching and merged.server.bind == base.server.bind
