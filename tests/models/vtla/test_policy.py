"""The served policy: inputs reach the action, batching is exact, bad input is refused precisely."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.interfaces import InputError, Observation
from models.vtla.serving import VTLAPolicy, load_policy
from tests.models.vtla.conftest import force_torque, make_image, make_obs
from vtla_contracts.model_spec import ModelSpec

# Differences are measured in normalised units (physical difference / that dimension's std).
# Batched and one-by-one forwards differ only by float32 reduction order (observed ~1e-7).
BATCH_ATOL = 1e-5
# A changed input must move the action by at least 10x that (observed 1e-3 .. 1e-1 with the
# tiny preset's random weights).
MIN_EFFECT = 1e-4
ACTION_STD = np.array([0.005, 0.0066, 0.0068, 0.0136, 0.0172, 0.0182, 0.021])

# fp32 actions of the same observation, across calls or rows of a batch: kernels may reorder sums
ACT_RTOL, ACT_ATOL = 1e-5, 1e-6


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference in normalised units."""
    return float((np.abs(a - b) / ACTION_STD).max())


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert max_diff(a, b) <= BATCH_ATOL, max_diff(a, b)


def test_act_shape_units_and_gripper_range(tiny_policy: VTLAPolicy) -> None:
    actions = tiny_policy.act([make_obs(0), make_obs(1)])
    assert actions.shape == (2, 4, 7) and actions.dtype == np.float32
    assert np.isfinite(actions).all()
    assert ((actions[..., 6] >= 0) & (actions[..., 6] <= 1)).all()


def test_identical_inputs_give_identical_actions(tiny_policy: VTLAPolicy) -> None:
    obs = make_obs(3, instruction="stack the cubes", force_torque=force_torque(1))
    first = tiny_policy.act([obs])
    second = tiny_policy.act([obs])
    np.testing.assert_allclose(first, second, rtol=ACT_RTOL, atol=ACT_ATOL)
    twice = tiny_policy.act([obs, obs])
    # two rows of one batch: BLAS kernels (MKL on AMD EPYC, say) do not promise bitwise-equal rows
    np.testing.assert_allclose(twice[0], twice[1], rtol=ACT_RTOL, atol=ACT_ATOL)


def test_instruction_changes_the_action(tiny_policy: VTLAPolicy) -> None:
    a = tiny_policy.act([make_obs(0, instruction="pick up the red cube")])
    b = tiny_policy.act([make_obs(0, instruction="push the blue block to the left")])
    c = tiny_policy.act([make_obs(0)])  # the default instruction
    assert max_diff(a, b) > MIN_EFFECT
    assert max_diff(a, c) > MIN_EFFECT


def contact_image(row: int, col: int, size: int = 32) -> np.ndarray:
    """A grey gel image with one bright contact patch at (row, col)."""
    image = np.full((size, size, 3), 90, dtype=np.uint8)
    image[row : row + 8, col : col + 8] = (250, 200, 160)
    return image


def test_tactile_image_changes_the_action(tiny_policy: VTLAPolicy) -> None:
    none = tiny_policy.act([make_obs(0)])
    touch_a = tiny_policy.act([make_obs(0, tactile_image=contact_image(4, 4))])
    touch_b = tiny_policy.act([make_obs(0, tactile_image=contact_image(20, 20))])
    as_float = contact_image(4, 4).astype(np.float32) / 255.0
    touch_float = tiny_policy.act([make_obs(0, tactile_image=as_float)])
    assert max_diff(none, touch_a) > MIN_EFFECT
    assert max_diff(touch_a, touch_b) > MIN_EFFECT
    assert_close(touch_float, touch_a)  # float [0,1] == uint8/255


def test_force_torque_changes_the_action(tiny_policy: VTLAPolicy) -> None:
    none = tiny_policy.act([make_obs(0)])
    push = tiny_policy.act([make_obs(0, force_torque=force_torque(1))])
    other = tiny_policy.act([make_obs(0, force_torque=force_torque(2))])
    assert max_diff(none, push) > MIN_EFFECT
    assert max_diff(push, other) > MIN_EFFECT


def test_batch_equals_one_by_one_with_mixed_instruction_lengths(tiny_policy: VTLAPolicy) -> None:
    instructions = [None, "go", "pick up the red cube and place it in the green bowl", "push"]
    batch = [
        make_obs(i, instruction=text, force_torque=force_torque(i)) for i, text in enumerate(instructions)
    ]
    together = tiny_policy.act(batch)
    alone = np.concatenate([tiny_policy.act([obs]) for obs in batch])
    assert_close(together, alone)


def test_any_image_size_is_resized(tiny_policy: VTLAPolicy) -> None:
    small = tiny_policy.act([make_obs(0, size=(20, 30))])
    native = tiny_policy.act([make_obs(0, size=(64, 64))])
    large = tiny_policy.act([make_obs(0, size=(480, 640))])
    assert small.shape == native.shape == large.shape == (1, 4, 7)


def test_batch_key_groups_by_shapes_not_instructions(tiny_policy: VTLAPolicy) -> None:
    key = tiny_policy.batch_key
    assert key(make_obs(0, instruction="a")) == key(make_obs(1, instruction="a much longer instruction"))
    assert key(make_obs(0)) != key(make_obs(0, size=(64, 64)))
    assert key(make_obs(0)) != key(make_obs(0, force_torque=force_torque()))
    tac_u8 = make_obs(0, tactile_image=make_image(32, 32))
    tac_f32 = make_obs(0, tactile_image=make_image(32, 32).astype(np.float32))
    assert key(tac_u8) != key(tac_f32) != key(make_obs(0))
    hash(key(tac_u8))


@pytest.mark.parametrize(
    ("obs", "message"),
    [
        (Observation(images={}), "missing image for camera 'primary'"),
        (Observation(images={"primary": make_image(8, 8), "wrist": make_image(8, 8)}), "unknown camera"),
        (Observation(images={"primary": make_image(8, 8)[..., :2]}), "shape (H, W, 3)"),
        (Observation(images={"primary": make_image(8, 8).astype(np.float32)}), "must be uint8"),
        (make_obs(tactile_image=make_image(8, 8)[..., 0]), "tactile image must have shape (H, W, 3)"),
        (make_obs(tactile_image=make_image(8, 8).astype(np.int16)), "tactile image must be uint8 or float32"),
        (make_obs(tactile_image=np.full((8, 8, 3), np.nan, np.float32)), "tactile image has non-finite"),
        (make_obs(force_torque=np.zeros(3, np.float32)), "force_torque must have shape (6,)"),
        (make_obs(force_torque=np.array([0, 0, np.inf, 0, 0, 0], np.float32)), "force_torque has non-finite"),
        (make_obs(proprio=np.zeros(8, np.float32)), "takes no proprio"),
        (make_obs(instruction="x" * 400), "instruction too long: the prompt is 414 tokens"),
        (make_obs(instruction="x" * 100_000), "instruction too long: 100000 characters"),
    ],
)
def test_validate_refuses_bad_input_precisely(
    tiny_policy: VTLAPolicy, obs: Observation, message: str
) -> None:
    with pytest.raises(InputError, match=_escape(message)):
        tiny_policy.validate(obs)


def test_validate_accepts_good_input(tiny_policy: VTLAPolicy) -> None:
    tiny_policy.validate(
        make_obs(0, instruction="pick", force_torque=force_torque(), tactile_image=make_image(5, 9))
    )


def test_bad_request_does_not_disturb_the_next_batch(tiny_policy: VTLAPolicy) -> None:
    good = make_obs(0, instruction="pick")
    before = tiny_policy.act([good])
    with pytest.raises(InputError):
        tiny_policy.validate(make_obs(0, instruction="y" * 1000))
    np.testing.assert_allclose(tiny_policy.act([good]), before, rtol=ACT_RTOL, atol=ACT_ATOL)


def test_describe_and_stats(tiny_policy: VTLAPolicy) -> None:
    hello = tiny_policy.describe()
    assert hello["action"]["dim"] == 7 and hello["action"]["chunk_size"] == 4
    assert hello["action"]["names"] == ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert (
        hello["action"]["units"][:3] == ["m", "m", "m"] and hello["action"]["units"][6] == "closed_fraction"
    )
    assert hello["action"]["normalization"]["type"] == "mean_std"
    assert hello["image_size"] == [64, 64] and hello["cameras"] == ["primary"]
    assert hello["tactile"] == {
        "image": {"shape": [32, 32, 3], "dtypes": ["uint8", "float32"]},
        "force_torque": {"dim": 6},
    }
    assert hello["proprio"] is None and hello["random_weights"] is True and hello["preset"] == "tiny"
    assert 100_000 < hello["parameters"] < 1_000_000
    stats = tiny_policy.stats()
    assert stats["mean"] == [-5.6e-06, 1.7e-05, 4.0e-05, -5.5e-05, -2.4e-04, -9.5e-05, 0.1132]
    assert stats["std"] == [0.005, 0.0066, 0.0068, 0.0136, 0.0172, 0.0182, 0.021]
    assert stats["description"]["6"] == "gripper (0=open, 1=closed)" and stats["type"] == "mean_std"
    info = tiny_policy.info
    assert (info.name, info.kind, info.device, info.dtype, info.random_weights) == (
        "vtla",
        "vtla",
        "cpu",
        "float32",
        True,
    )


def test_warmup_and_reset(tiny_policy: VTLAPolicy) -> None:
    tiny_policy.warmup()
    tiny_policy.reset(None)
    tiny_policy.reset("session-1")


def test_random_preset_is_deterministic() -> None:
    one = load_policy(ModelSpec(kind="vtla"), "cpu", "float32")
    two = load_policy(ModelSpec(kind="vtla"), "cpu", "float32")
    np.testing.assert_allclose(one.act([make_obs(5)]), two.act([make_obs(5)]), rtol=ACT_RTOL, atol=ACT_ATOL)


def test_hub_download_without_path_is_refused() -> None:
    with pytest.raises(ValueError, match="no public Hub checkpoint"):
        load_policy(ModelSpec(kind="vtla", hub_download=True), "cpu", "float32")
    with pytest.raises(ValueError, match="unknown VTLA preset"):
        load_policy(ModelSpec(kind="vtla", preset="huge"), "cpu", "float32")


def test_registry_resolves_the_factory() -> None:
    from models.model_kinds import load_policy as registry_load

    policy = registry_load(ModelSpec(kind="vtla"), "cpu", "float32")
    assert isinstance(policy, VTLAPolicy)


def test_legacy_readout_ignores_instruction_and_touch() -> None:
    """The predecessor's defect, reproduced on purpose by readout='legacy' (and only there)."""
    from models.vtla.checkpoint import build_model
    from models.vtla.presets import legacy_variant, tiny
    from models.vtla.text import build_byte_tokenizer

    cfg = legacy_variant(tiny(), (32, 32))
    cfg = dataclasses.replace(cfg, tactile=dataclasses.replace(cfg.tactile, image_size=32))
    import torch

    policy = VTLAPolicy(
        build_model(cfg, torch.device("cpu"), torch.float32),
        build_byte_tokenizer(),
        torch.device("cpu"),
        True,
        "legacy",
    )
    a = policy.act([make_obs(0, instruction="pick")])
    b = policy.act([make_obs(0, instruction="place it somewhere else", tactile_image=make_image(32, 32))])
    assert_close(a, b)
    assert max_diff(a, policy.act([make_obs(1, instruction="pick")])) > MIN_EFFECT  # the image still counts


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_two_cameras_and_proprio() -> None:
    import torch

    from models.vtla.checkpoint import build_model
    from models.vtla.presets import tiny
    from models.vtla.text import build_byte_tokenizer

    cfg = dataclasses.replace(tiny(), cameras=("primary", "wrist"), proprio_dim=8)
    cpu = torch.device("cpu")
    policy = VTLAPolicy(build_model(cfg, cpu, torch.float32), build_byte_tokenizer(), cpu, True, "two-cam")
    assert policy.describe()["cameras"] == ["primary", "wrist"] and policy.describe()["proprio"] == {"dim": 8}

    def obs(seed: int, wrist_seed: int, proprio: np.ndarray, text: str = "pick") -> Observation:
        images = {"primary": make_image(48, 64, seed), "wrist": make_image(32, 32, wrist_seed)}
        return Observation(images=images, instruction=text, proprio=proprio)

    p0, p1 = np.zeros(8, np.float32), np.linspace(-1, 1, 8).astype(np.float32)
    base = policy.act([obs(0, 0, p0)])
    assert max_diff(base, policy.act([obs(0, 1, p0)])) > MIN_EFFECT  # the wrist camera counts
    assert max_diff(base, policy.act([obs(0, 0, p1)])) > MIN_EFFECT  # proprio counts
    batch = [obs(0, 0, p0), obs(1, 2, p1, "a longer instruction here")]
    assert_close(policy.act(batch), np.concatenate([policy.act([o]) for o in batch]))
    with pytest.raises(InputError, match="missing image for camera 'wrist'"):
        policy.validate(Observation(images={"primary": make_image(8, 8)}, proprio=p0))
    with pytest.raises(InputError, match=_escape("needs proprio of shape (8,)")):
        policy.validate(Observation(images={"primary": make_image(8, 8), "wrist": make_image(8, 8)}))
    with pytest.raises(InputError, match=_escape("proprio must have shape (8,)")):
        policy.validate(obs(0, 0, np.zeros(3, np.float32)))
