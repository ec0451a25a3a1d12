"""launch_decode_step() + finish_decode_step(): the same tokens as decode_step(); admit/cancel in between."""

from __future__ import annotations

from typing import Any

import pytest

from models.interfaces import GenerationEvent, GenerationSettings
from models.moondream.generator import MoondreamGenerator
from tests.models.moondream.conftest import MakeGenerator, request
from tests.models.moondream.test_decode_step import admit_all

SETTINGS = GenerationSettings(max_tokens=12, max_objects=2)


def cases() -> list[Any]:
    return [
        request(1, "caption", seed=1, settings=SETTINGS),
        request(2, "query", seed=2, text="what is red?", settings=SETTINGS),
        request(3, "detect", seed=3, settings=SETTINGS),
        request(4, "point", seed=4, settings=GenerationSettings(max_tokens=12, max_objects=2, temperature=0.7)),
    ]


def split_step(generator: MoondreamGenerator) -> list[GenerationEvent]:
    generator.launch_decode_step()
    return generator.finish_decode_step()


def drive(generator: MoondreamGenerator, step: Any) -> list[GenerationEvent]:
    events = admit_all(generator, cases())
    for _ in range(200):
        if not generator.active():
            return events
        events += step(generator)
    raise AssertionError("did not finish")


def strip(events: list[GenerationEvent]) -> list[tuple[int, Any, Any]]:
    return [
        (e.key, e.chunk, {k: v for k, v in e.result.items() if k != "metrics"} if e.result else None)
        for e in events
    ]


def test_launch_plus_finish_equals_decode_step(make_generator: MakeGenerator) -> None:
    want = strip(drive(make_generator(), MoondreamGenerator.decode_step))
    got = strip(drive(make_generator(), split_step))
    assert got == want
    assert sum(1 for _, _, result in got if result) == 4


def test_finish_without_launch_and_double_launch_raise(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    with pytest.raises(RuntimeError, match="no decode step launched"):
        generator.finish_decode_step()
    admit_all(generator, cases()[:1])
    generator.launch_decode_step()
    with pytest.raises(RuntimeError, match="already launched"):
        generator.launch_decode_step()
    with pytest.raises(RuntimeError, match="already launched"):
        generator.decode_step()
    assert isinstance(generator.finish_decode_step(), list)
    with pytest.raises(RuntimeError, match="no decode step launched"):
        generator.finish_decode_step()


def test_launch_with_nothing_decoding_finishes_empty(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    generator.launch_decode_step()
    assert generator.finish_decode_step() == []


def test_decode_step_done_on_cpu_is_true_at_once(make_generator: MakeGenerator) -> None:
    """On CPU the launch computes the step, so the loop sees a synchronous launch (done at once)
    and keeps the plain order; on CUDA the same query is the event's (tests/models/moondream/test_cuda_graphs.py)."""
    generator = make_generator()
    assert generator.decode_step_done()  # nothing launched
    admit_all(generator, cases()[:1])
    generator.launch_decode_step()
    assert generator.decode.in_flight and generator.decode_step_done()
    generator.finish_decode_step()
    assert not generator.decode.in_flight and generator.decode_step_done()


def test_cancel_between_launch_and_finish_drops_that_row(make_generator: MakeGenerator) -> None:
    reference = make_generator()
    admit_all(reference, cases()[:2])
    reference.cancel(1)
    want = strip(drive_rest(reference))

    generator = make_generator()
    admit_all(generator, cases()[:2])
    generator.launch_decode_step()
    generator.cancel(1)  # takes effect now for key 1: the launched row is discarded
    first = generator.finish_decode_step()
    assert all(e.key == 2 for e in first)
    assert 1 not in {e.key for e in first}
    got = strip(first + drive_rest(generator))
    # key 2 decoded one step in the launched step in both runs (reference: in drive_rest's first)
    assert got == want
    assert generator.active() == 0


def drive_rest(generator: MoondreamGenerator) -> list[GenerationEvent]:
    events: list[GenerationEvent] = []
    while generator.active():
        events += generator.step()
    return events


def test_admit_between_launch_and_finish_joins_at_the_next_step(make_generator: MakeGenerator) -> None:
    """A request admitted (and even prefilled) while a step is launched is not part of that step and
    decodes from the next one: the same events as admitting it after the finish."""

    def run(admit_during: bool) -> list[tuple[int, Any, Any]]:
        generator = make_generator()
        first, late = cases()[0], cases()[1]
        events = admit_all(generator, [first])
        generator.launch_decode_step()
        if admit_during:
            generator.admit(late)
            while generator.ready().admitting:
                events += generator.admission_unit()
            events += generator.finish_decode_step()
        else:
            events += generator.finish_decode_step()
            generator.admit(late)
            while generator.ready().admitting:
                events += generator.admission_unit()
        return strip(events + drive_rest(generator))

    during, after = run(True), run(False)
    assert during == after
    assert {key for key, _, result in during if result} == {1, 2}


def test_cancel_then_reuse_slot_between_launch_and_finish(make_generator: MakeGenerator) -> None:
    """The cancelled request's slot is taken by a new admission before the finish: the finish
    must not report the old row, and the new request's results equal a fresh run's."""
    generator = make_generator(max_sequences=1)
    admit_all(generator, cases()[:1])
    generator.launch_decode_step()
    generator.cancel(1)
    replacement = cases()[1]
    generator.admit(replacement)
    while generator.ready().admitting:
        generator.admission_unit()
    assert generator.finish_decode_step() == []
    got = strip(drive_rest(generator))

    fresh = make_generator(max_sequences=1)
    want = strip(admit_all(fresh, [cases()[1]]) + drive_rest(fresh))
    assert got == want
