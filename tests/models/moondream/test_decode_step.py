"""The static-shape decode step: host synchronisations per step, shape buckets, torch.compile without recompiles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.interfaces import GenerationEvent, GenerationSettings
from models.moondream.decode_step import DecodeOptions, length_buckets
from models.moondream.generator import MoondreamGenerator
from tests.models.moondream.conftest import MakeGenerator, request

aten = torch.ops.aten


@dataclass
class HostReads:
    """What a step does that makes the host wait for the device (or would, on CUDA)."""

    scalar_reads: int = 0  # aten._local_scalar_dense: .item(), int(t), float(t), bool(t)
    device_to_host: int = 0  # copies from a non-CPU device into host memory
    materialised: int = 0  # Tensor.tolist() / Tensor.numpy() calls (invisible to dispatch on CPU)
    readback_copies: int = 0  # copies into the step's (pinned) output buffer
    ops: list[str] = field(default_factory=list)

    @property
    def syncs(self) -> int:
        return self.scalar_reads + self.device_to_host + self.materialised


class SyncCounter(TorchDispatchMode):
    def __init__(self, reads: HostReads, readback_ptr: int) -> None:
        super().__init__()
        self.reads = reads
        self.readback_ptr = readback_ptr

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.reads.scalar_reads += 1
        elif func in (aten.copy_.default, aten._to_copy.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst_device = args[0].device if func is aten.copy_.default else kwargs.get("device", src.device)
            if src.device.type != "cpu" and torch.device(dst_device).type == "cpu":
                self.reads.device_to_host += 1
            if func is aten.copy_.default and args[0].data_ptr() == self.readback_ptr:
                self.reads.readback_copies += 1
        self.reads.ops.append(str(func))
        return func(*args, **kwargs)


@contextmanager
def counting(generator: MoondreamGenerator, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    reads = HostReads()
    tolist, numpy = torch.Tensor.tolist, torch.Tensor.numpy

    def counted_tolist(self: torch.Tensor) -> Any:
        reads.materialised += 1
        return tolist(self)

    def counted_numpy(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        reads.materialised += 1
        return numpy(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        patch.setattr(torch.Tensor, "numpy", counted_numpy)
        with SyncCounter(reads, generator.decode._host_out.data_ptr()):
            yield reads


def admit_all(generator: MoondreamGenerator, requests: list[Any]) -> list[GenerationEvent]:
    events: list[GenerationEvent] = []
    for req in requests:
        events += generator.admit(req)
    while generator._admitting:  # finish admission: what follows are pure decode steps
        events += generator.step()
    return events


@pytest.mark.parametrize("rows", [1, 4])
def test_at_most_one_host_sync_per_decode_step(
    make_generator: MakeGenerator, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """1 and max_sequences active rows, every skill and a sampled row: no sync but the one read-back."""
    generator = make_generator(max_sequences=4)
    settings = GenerationSettings(max_tokens=40, max_objects=5)
    sampled = GenerationSettings(max_tokens=40, temperature=0.7, top_p=0.9)
    cases = [
        request(1, "caption", seed=1, settings=settings),
        request(2, "query", seed=2, text="what is red?", settings=sampled),
        request(3, "detect", seed=3, settings=settings),
        request(4, "point", seed=4, settings=settings),
    ][:rows]
    admit_all(generator, cases)
    steps = 0
    for _ in range(8):
        decoding = generator.active()
        if decoding == 0:
            break
        with counting(generator, monkeypatch) as reads:
            generator.step()
        steps += 1
        assert reads.syncs == 0, f"host syncs inside a decode step of {decoding} rows: {reads}"
        assert reads.readback_copies == 1  # the one read-back (a device->host copy on CUDA)
    assert steps >= 3


def test_step_shapes_are_fixed_rows_and_bucketed_lengths(make_generator: MakeGenerator) -> None:
    generator = make_generator(max_sequences=3)
    step = generator.decode
    assert step.rows == 3
    assert step.attend_len(0) == step.options.length_bucket
    assert step.attend_len(generator.cache.context - 1) == generator.cache.context
    assert length_buckets(256, 128, 66) == [128, 256]
    assert length_buckets(200, 64, 1) == [64, 128, 192, 200]
    admit_all(generator, [request(1, "caption", settings=GenerationSettings(max_tokens=30))])
    shapes = set()
    while generator.active():
        generator.step()
        assert step.last_shape is not None
        shapes.add(step.last_shape)
    assert shapes == {(128, False, False)}  # 66 + prompt + 30 positions: one bucket, one shape


def run_schedule(generator: MoondreamGenerator, steps: int) -> tuple[dict[int, Any], set[tuple[int, bool, bool]]]:
    """Admissions with different prompts and lengths joining and leaving, until ``steps`` decode steps ran."""
    questions = ["what is red?", "how many cubes?", "where is the ball?", "is it big?", "which one?"]
    finals: dict[int, Any] = {}
    shapes: set[tuple[int, bool, bool]] = set()
    key = 0
    for _ in range(10 * steps):
        if generator.decode.steps_run >= steps:
            break
        while generator.free_slots() and key < 48:  # enough requests for `steps` decode steps
            text = questions[key % len(questions)]
            settings = GenerationSettings(max_tokens=3 + 2 * (key % 4))
            generator.admit(request(key, "query", seed=key, text=text, settings=settings))
            key += 1
        for event in generator.step():
            if event.result is not None:
                finals[event.key] = event.result["answer"]
        if generator.decode.last_shape is not None:
            shapes.add(generator.decode.last_shape)
    return finals, shapes


@pytest.mark.slow
def test_compiled_step_matches_eager_without_recompiles(make_generator: MakeGenerator) -> None:
    """50 decode steps (between admissions, 1..4 active rows) through
    torch.compile(fullgraph=True, dynamic=False): one compiled graph per step shape, same tokens."""
    import torch._dynamo

    eager = make_generator(max_sequences=4)
    expected, eager_shapes = run_schedule(eager, 50)

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = make_generator(max_sequences=4)
    compiled.decode = type(compiled.decode)(
        compiled.model.text, compiled.model.region, compiled.cache, DecodeOptions(compile=True), compiled._rng
    )
    got, shapes = run_schedule(compiled, 50)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert shapes == eager_shapes
    assert graphs == len(shapes), f"{graphs} graphs compiled for {len(shapes)} step shapes {shapes}"
    assert len(expected) >= 6 and compiled.decode.steps_run == 50
    assert got == expected  # float64 tiny model: the compiled kernels pick the same argmax tokens
