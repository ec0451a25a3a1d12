"""VTLA frames staged by prepare() (off the loop thread) give the stacked path's actions, and the
counters say which path ran."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.interfaces import Observation
from models.vtla.checkpoint import build_model
from models.vtla.presets import tiny
from models.vtla.serving import VTLAPolicy, load_policy
from models.vtla.text import build_byte_tokenizer
from tests.models.vtla.conftest import force_torque, make_image
from tests.models.vtla.test_policy import MIN_EFFECT, max_diff
from vtla_contracts.model_spec import ModelSpec

# normalised units (physical / std). Both paths feed the forward the same uint8 bytes in the same
# batch layout, so in float32 on CPU they agree to rounding (observed: exactly equal)
STAGED_ATOL = 1e-5
S = tiny().vision.image_size  # the input size: only frames of exactly this size are staged


def policy(**options: object) -> VTLAPolicy:
    return load_policy(ModelSpec(kind="vtla", preset="tiny", options=options), "cpu", "float32")


def observations(count: int, seed: int = 0) -> list[Observation]:
    out = []
    for i in range(count):
        extra: dict[str, object] = {"instruction": ["pick", None, "stack the blue block"][i % 3]}
        if i % 2:
            extra["force_torque"] = force_torque(seed + i)
        out.append(Observation(images={"primary": make_image(S, S, seed=seed + i)}, **extra))  # type: ignore[arg-type]
    return out


def delta(policy: VTLAPolicy, before: dict[str, object]) -> tuple[int, int]:
    after = policy.staging_stats()
    return after["gathered"] - before["gathered"], after["stacked"] - before["stacked"]  # type: ignore[operator]


def free_rows(policy: VTLAPolicy, camera: str = "primary") -> int:
    return int(policy.staging_stats()["rings"][camera]["free_rows"])


@pytest.fixture(scope="module")
def staged_policy() -> VTLAPolicy:
    return policy()


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_staged_frames_give_the_stacked_actions(staged_policy: VTLAPolicy, batch_size: int) -> None:
    obs = observations(batch_size, seed=batch_size)
    capacity = free_rows(staged_policy)
    prepared = [staged_policy.prepare(o) for o in obs]
    assert all(set(p.staged) == {"primary"} for p in prepared)
    assert free_rows(staged_policy) == capacity - batch_size
    before = staged_policy.staging_stats()
    staged = staged_policy.act(prepared)
    assert delta(staged_policy, before) == (batch_size, 0)
    assert free_rows(staged_policy) == capacity  # act gave its rows back
    before = staged_policy.staging_stats()
    stacked = staged_policy.act(obs)
    assert delta(staged_policy, before) == (0, batch_size)
    assert staged.shape == stacked.shape == (batch_size, tiny().action.chunk_size, 7)
    assert max_diff(staged, stacked) <= STAGED_ATOL, max_diff(staged, stacked)
    if batch_size > 1:  # the gather kept the rows apart (not one frame for all)
        assert max_diff(staged[0], staged[1]) > MIN_EFFECT


def test_a_batch_with_an_unstaged_row_falls_back_and_matches(staged_policy: VTLAPolicy) -> None:
    obs = observations(3, seed=40)
    odd = dataclasses.replace(obs[1], images={"primary": make_image(S + 8, S - 8, seed=41)})  # needs a resize
    mixed = [staged_policy.prepare(o) for o in (obs[0], odd, obs[2])]
    assert [bool(p.staged) for p in mixed] == [True, False, True]
    capacity = free_rows(staged_policy) + 2
    before = staged_policy.staging_stats()
    actions = staged_policy.act(mixed)
    assert delta(staged_policy, before) == (0, 3)
    assert free_rows(staged_policy) == capacity  # the staged rows are released even so
    expected = staged_policy.act([obs[0], odd, obs[2]])
    assert max_diff(actions, expected) <= STAGED_ATOL


def test_a_prepared_observation_acted_twice_falls_back_the_second_time(staged_policy: VTLAPolicy) -> None:
    obs = observations(2, seed=50)
    prepared = [staged_policy.prepare(o) for o in obs]
    before = staged_policy.staging_stats()
    first = staged_policy.act(prepared)
    second = staged_policy.act(prepared)  # its rows were released (and may hold other frames now)
    assert delta(staged_policy, before) == (2, 2)
    assert max_diff(first, second) <= STAGED_ATOL


def test_a_full_ring_leaves_frames_to_the_stacked_path() -> None:
    small = policy(frame_ring_rows=2)
    obs = observations(3, seed=60)
    prepared = [small.prepare(o) for o in obs]
    assert [bool(p.staged) for p in prepared] == [True, True, False]
    assert small.staging_stats()["rings"]["primary"]["refused_full"] == 1
    before = small.staging_stats()
    actions = small.act(prepared)
    assert delta(small, before) == (0, 3)
    assert free_rows(small) == 2
    assert max_diff(actions, small.act(obs)) <= STAGED_ATOL


def test_per_camera_paths_with_two_cameras() -> None:
    cfg = dataclasses.replace(tiny(), cameras=("primary", "wrist"))
    cpu = torch.device("cpu")
    two = VTLAPolicy(build_model(cfg, cpu, torch.float32), build_byte_tokenizer(), cpu, True, "two-cam")
    obs = [
        Observation(images={"primary": make_image(S, S, seed=70 + i), "wrist": make_image(32, 48, seed=80 + i)})
        for i in range(3)
    ]
    prepared = [two.prepare(o) for o in obs]
    assert all(set(p.staged) == {"primary"} for p in prepared)  # the wrist frames need a resize
    stats = two.staging_stats()
    actions = two.act(prepared)
    after = two.staging_stats()
    assert after["gathered"] - stats["gathered"] == 3 and after["stacked"] - stats["stacked"] == 3
    assert after["rings"]["wrist"]["refused_shape"] == 3
    assert max_diff(actions, two.act(obs)) <= STAGED_ATOL


def test_stage_frames_off_prepares_nothing() -> None:
    off = policy(stage_frames=False)
    obs = observations(1)[0]
    assert off.prepare(obs) is obs
    assert off.describe()["stage_frames"] is False and off.staging_stats()["rings"] == {}
    before = off.staging_stats()
    off.act([obs])
    assert delta(off, before) == (0, 1)


@pytest.mark.parametrize("rows", [0, -3, "many", True, 2.5])
def test_frame_ring_rows_must_be_a_positive_integer(rows: object) -> None:
    with pytest.raises(ValueError, match="frame_ring_rows"):
        policy(frame_ring_rows=rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_staged_frames_from_other_threads_give_the_stacked_actions() -> None:
    """CUDA: frames staged on other threads (as the server's I/O thread and decode workers do),
    uploaded on the ring's stream, gathered on the act stream: the stacked path's actions, across
    rounds that reuse the rings' rows (fp32, CUDA graphs on)."""
    import concurrent.futures

    gpu = load_policy(ModelSpec(kind="vtla", preset="tiny", options={"frame_ring_rows": 16}), "cuda", "float32")
    gpu.warmup()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for round_ in range(6):
            obs = observations(8, seed=100 + round_)
            prepared = list(pool.map(gpu.prepare, obs))
            before = gpu.staging_stats()
            staged = gpu.act(prepared)
            assert delta(gpu, before) == (8, 0)
            assert max_diff(staged, gpu.act(obs)) <= STAGED_ATOL
    assert free_rows(gpu) == 16
