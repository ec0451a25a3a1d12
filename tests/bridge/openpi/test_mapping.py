"""Key mappings without a server: presets, the custom form, and what each error names."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.config import ConfigError, config_from_mapping
from bridge.openpi.mapping import MappingError, PolicyView, flatten, resolved, to_act_args
from bridge.openpi.settings import settings_from_config
from vtla_contracts.openpi_keys import mapping_from_table, presets, resolve_mapping

TWO_CAMERAS = PolicyView.from_hello({"models": {
    "vlm": {"skills": ["caption"]},
    "pol": {"action": {"dim": 7, "chunk_size": 2}, "cameras": ["front", "wrist"], "proprio": {"dim": 8},
            "tactile": {"force_torque": {"dim": 6}}},
}})
IMAGE = np.zeros((8, 8, 3), np.uint8)


def test_presets_hold_the_documented_keys() -> None:
    assert set(presets()) == {"libero", "droid", "aloha"}
    assert presets()["libero"].as_dict() == {"observation/image": "camera", "observation/wrist_image": "camera:wrist",
                                             "observation/state": "proprio", "prompt": "instruction"}
    droid = presets()["droid"].keys
    assert [k for k, t in droid if t == "proprio"] == ["observation/joint_position", "observation/gripper_position"]
    assert presets()["aloha"].as_dict()["images.cam_high"] == "camera"


def test_policy_view_reads_hello() -> None:
    assert TWO_CAMERAS is not None
    assert TWO_CAMERAS.name == "pol" and TWO_CAMERAS.cameras == ("front", "wrist")
    assert TWO_CAMERAS.proprio_dim == 8 and TWO_CAMERAS.tactile == {"force_torque"}
    assert PolicyView.from_hello({"models": {"vlm": {"skills": []}}}) is None  # still loading: no policy
    assert resolved(presets()["libero"], TWO_CAMERAS)["observation/image"] == "camera:front"


def test_libero_observation_becomes_act_args_in_order() -> None:
    assert TWO_CAMERAS is not None
    args = to_act_args({"observation/image": IMAGE, "observation/wrist_image": IMAGE + 1,
                        "observation/state": np.arange(8, dtype=np.float64), "prompt": "go"},
                       presets()["libero"], TWO_CAMERAS)
    assert set(args["images"]) == {"front", "wrist"} and int(args["images"]["wrist"][0, 0, 0]) == 1
    assert args["proprio"].dtype == np.float32 and args["proprio"].tolist() == list(range(8))
    assert args["instruction"] == "go" and "tactile" not in args


def test_custom_mapping_with_drop_and_tactile() -> None:
    assert TWO_CAMERAS is not None
    mapping = resolve_mapping("custom", {"cam": "camera:wrist", "ft": "tactile.force_torque", "depth": "drop"})
    args = to_act_args({"cam": IMAGE, "ft": [0, 1, 2, 3, 4, 5], "depth": np.zeros((8, 8))}, mapping, TWO_CAMERAS)
    assert set(args["images"]) == {"wrist"} and args["tactile"]["force_torque"].tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("obs", "needle"),
    [
        ({"observation/image": IMAGE, "extra": 1}, "observation key 'extra' is not in the 'libero' key mapping"),
        ({"observation/image": IMAGE, "prompt": 3}, "'prompt': expected a string"),
        ({"observation/image": IMAGE, "observation/state": "high"}, "'observation/state': expected numbers"),
        ({"observation/image": IMAGE, "observation/state": np.zeros(3)}, "has 3 values, but the served policy 'pol'"),
        ({"observation/image": [[1]]}, "'observation/image': expected a uint8 image array"),
        ({"prompt": "x"}, "no camera image"),
        ([1, 2], "must be a map"),
        ({1: IMAGE}, "keys must be strings"),
    ],
)
def test_errors_name_the_key(obs: object, needle: str) -> None:
    assert TWO_CAMERAS is not None
    with pytest.raises(MappingError) as info:
        to_act_args(obs, presets()["libero"], TWO_CAMERAS)
    assert needle in str(info.value)


def test_inputs_the_policy_does_not_declare_are_refused_with_what_hello_says() -> None:
    one_camera = PolicyView.from_hello({"models": {"p": {"action": {"dim": 7}, "cameras": ["primary"]}}})
    assert one_camera is not None
    with pytest.raises(MappingError, match=r"camera 'wrist'.*\['primary'\].*hello.models.p.cameras"):
        to_act_args({"observation/image": IMAGE, "observation/wrist_image": IMAGE}, presets()["libero"], one_camera)
    with pytest.raises(MappingError, match=r"takes no proprio \(hello.models.p.proprio = None\)"):
        to_act_args({"observation/image": IMAGE, "observation/state": [1.0]}, presets()["libero"], one_camera)
    mapping = mapping_from_table("custom", {"img": "camera", "touch": "tactile.image"}, "test")
    with pytest.raises(MappingError, match=r"'touch' maps to tactile.image.*hello.models.p.tactile"):
        to_act_args({"img": IMAGE, "touch": IMAGE}, mapping, one_camera)


def test_flatten_joins_nested_keys() -> None:
    assert flatten({"images": {"cam_high": 1, "cam_low": 2}, "state": 3}) == {
        "images.cam_high": 1, "images.cam_low": 2, "state": 3}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"openpi": {"mapping": "bridge"}}, "openpi.mapping: unknown mapping 'bridge'"),
        ({"openpi": {"mapping": "custom"}}, "openpi.custom: the key mapping is empty"),
        ({"openpi": {"mapping": "custom", "custom": {"img": "eyes"}}}, "openpi.custom.'img': unknown target 'eyes'"),
        ({"openpi": {"custom": {"img": "camera"}}}, "use mapping = \"custom\""),
        ({"openpi": {"port": 0}}, "openpi.port"),
        ({"openpi": {"api_keys": "k"}}, "openpi.api_keys: expected a list of strings"),
        ({"openpi": {"request_timeout_s": 0}}, "openpi.request_timeout_s: must be > 0"),
    ],
)
def test_config_errors_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(table)
    assert message in str(info.value)


def test_settings_from_config() -> None:
    config = config_from_mapping({"server": {"auth_tokens": ["t"]},
                                  "openpi": {"mapping": "custom", "custom": {"img": "camera"}, "api_keys": ["k"]}})
    settings = settings_from_config(config)
    assert settings.server_endpoint == "tcp://127.0.0.1:5555" and settings.port == 8001
    assert settings.server_token == "t" and settings.api_keys == ("k",)
    assert settings.mapping.as_dict() == {"img": "camera"}
    with pytest.raises(ValueError, match="wildcard"):
        settings_from_config(config, server="tcp://127.0.0.1:*")
