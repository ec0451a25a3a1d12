"""The frame ring: staged rows gather back to the frames, rows are never leaked nor shared."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from models.vtla.frame_ring import FrameRing, StagedFrame

SHAPE = (8, 12, 3)
CPU = torch.device("cpu")


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(count)]


def stage_all(ring: FrameRing, arrays: list[np.ndarray]) -> list[StagedFrame]:
    staged = [ring.stage(a) for a in arrays]
    assert all(s is not None for s in staged)
    return [s for s in staged if s is not None]


def test_gather_equals_np_stack_with_repeated_and_reordered_rows() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=8)
    arrays = frames(5)
    staged = stage_all(ring, arrays)
    order = [3, 0, 4, 4, 1, 2, 2]  # padding repeats a row; any order
    out = ring.gather([staged[i] for i in order])
    assert out is not None and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), np.stack([arrays[i] for i in order]))
    assert ring.stats().gathered_rows == len(order) and ring.stats().staged == 5


def test_the_gathered_batch_is_a_copy_the_rows_can_be_reused_after() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=1)
    first, second = frames(2, seed=1)
    staged = ring.stage(first)
    assert staged is not None
    out = ring.gather([staged])
    assert out is not None
    staged.release()
    again = ring.stage(second)
    assert again is not None and again.row == staged.row
    np.testing.assert_array_equal(out[0].numpy(), first)


def test_full_ring_refuses_and_release_frees_one_row() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=3)
    staged = stage_all(ring, frames(3))
    assert ring.stats().free_rows == 0
    assert ring.stage(frames(1, seed=9)[0]) is None
    assert ring.stats().refused_full == 1
    staged[1].release()
    staged[1].release()  # idempotent: the row is not freed twice
    assert ring.stats().free_rows == 1
    late = ring.stage(frames(1, seed=9)[0])
    assert late is not None and late.row == staged[1].row
    assert ring.stats().free_rows == 0


def test_a_released_frame_is_never_gathered() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=2)
    a, b = stage_all(ring, frames(2))
    a.release()
    assert a.released and not b.released
    assert ring.gather([b, a]) is None
    other = FrameRing(SHAPE, np.uint8, CPU, capacity=2)
    assert other.gather([b]) is None  # another ring's frame


def test_dropping_the_last_reference_frees_the_row() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=2)
    staged = stage_all(ring, frames(2))
    assert ring.stats().free_rows == 0
    holder = {"frame": staged[0]}  # like an Observation of a cancelled request
    del staged
    assert ring.stats().free_rows == 1  # staged[1]: its only reference was the list
    cycle: list[object] = [holder]
    cycle.append(cycle)  # only the cycle collector can free this one
    del holder
    del cycle
    gc.collect()
    assert ring.stats().free_rows == 2


def test_wrong_shape_or_dtype_is_refused_and_takes_no_row() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=2)
    assert ring.stage(np.zeros((8, 12, 4), np.uint8)) is None
    assert ring.stage(np.zeros((12, 8, 3), np.uint8)) is None
    assert ring.stage(np.zeros(SHAPE, np.float32)) is None
    stats = ring.stats()
    assert stats.refused_shape == 3 and stats.free_rows == 2 and stats.staged == 0


def test_a_non_contiguous_frame_is_copied_correctly() -> None:
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=1)
    big = frames(1)[0].repeat(2, axis=1)[:, ::2]  # a strided view of SHAPE
    assert not big.flags.c_contiguous and big.shape == SHAPE
    staged = ring.stage(big)
    assert staged is not None
    out = ring.gather([staged])
    assert out is not None
    np.testing.assert_array_equal(out[0].numpy(), big)


def test_concurrent_stage_gives_distinct_rows_and_the_right_data() -> None:
    threads, per_thread = 4, 50
    ring = FrameRing(SHAPE, np.uint8, CPU, capacity=threads * per_thread)
    results: dict[int, list[tuple[np.ndarray, StagedFrame]]] = {}
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        arrays = frames(per_thread, seed=100 + index)
        start.wait()
        out = []
        for array in arrays:
            staged = ring.stage(array)
            assert staged is not None
            out.append((array, staged))
        results[index] = out

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    pairs = [pair for i in range(threads) for pair in results[i]]
    assert len(pairs) == threads * per_thread
    assert len({staged.row for _, staged in pairs}) == len(pairs)
    out = ring.gather([staged for _, staged in pairs])
    assert out is not None
    np.testing.assert_array_equal(out.numpy(), np.stack([array for array, _ in pairs]))
    assert ring.stats().free_rows == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        FrameRing(SHAPE, np.uint8, CPU, capacity=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gather_on_another_stream_equals_np_stack_across_reuse() -> None:
    device = torch.device("cuda")
    ring = FrameRing(SHAPE, np.uint8, device, capacity=4)
    act_stream = torch.cuda.Stream(device)
    for round_ in range(5):  # rows reused each round
        arrays = frames(4, seed=round_)
        staged = stage_all(ring, arrays)
        with torch.cuda.stream(act_stream):
            out = ring.gather(staged[::-1])
            assert out is not None and out.device.type == "cuda"
            host = out.cpu().numpy()
        np.testing.assert_array_equal(host, np.stack(arrays[::-1]))
        for s in staged:
            s.release()
