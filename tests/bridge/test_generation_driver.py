"""GenerationDriver alone: slots, events to replies, the one error path, and what it charges.

The generator here is a scripted stand-in written for these tests (the real generators are
exercised through the loop in test_engine_scheduling.py and test_scheduler.py): it records the
calls made on it, so that every slot freed can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.codec import decode_header
from bridge.generation_driver import SYNC_LAUNCHES_TO_STOP, GenerationDriver
from bridge.protocol import ErrorCode
from bridge.work import Outbox, Work
from models.interfaces import GenerationEvent, InputError, ReadyWork


@dataclass
class _Request:
    key: int
    stream: bool = True


class ScriptedGenerator:
    def __init__(self, slots: int = 4) -> None:
        self.slots = slots
        self.admitted: list[int] = []
        self.cancelled: list[int] = []
        self.next_events: list[GenerationEvent] = []
        self.fail_with: Exception | None = None
        self.launched = False
        self.done_at_launch = False

    def free_slots(self) -> int:
        return self.slots - len(self.admitted)

    def ready(self) -> ReadyWork:
        return ReadyWork(decoding=len(self.admitted))

    def admit(self, request: _Request) -> None:
        if request.key < 0:
            raise InputError("a bad crop")
        self.admitted.append(request.key)

    def cancel(self, key: int) -> None:
        self.cancelled.append(key)
        if key in self.admitted:
            self.admitted.remove(key)

    def admission_unit(self) -> list[GenerationEvent]:
        return self.decode_step()

    def decode_step(self) -> list[GenerationEvent]:
        if self.fail_with is not None:
            raise self.fail_with
        events, self.next_events = self.next_events, []
        return events

    def launch_decode_step(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.launched = True

    def decode_step_done(self) -> bool:
        return self.done_at_launch

    def finish_decode_step(self) -> list[GenerationEvent]:
        self.launched = False
        return self.decode_step()


def _work(key: int) -> Work:
    work = Work([b"c"], (b"c",), key, "caption", 0.0, None)
    work.payload = _Request(key)
    return work


def _replies(outbox: Outbox) -> list[dict[str, Any]]:
    return [decode_header(out.frames[2], out.frames[3:], 1 << 20) for out in outbox.drain()]


def _driver(generator: ScriptedGenerator) -> tuple[GenerationDriver, Outbox, dict[str, int]]:
    outbox = Outbox(1024)
    counters = {"admission_units": 0, "decode_steps": 0, "decode_steps_overlapped": 0, "generation_cancelled": 0}
    return GenerationDriver(generator, outbox, counters), outbox, counters  # type: ignore[arg-type]


def test_events_become_replies_and_a_finished_request_leaves_its_slot() -> None:
    generator = ScriptedGenerator()
    driver, outbox, counters = _driver(generator)
    driver.admit([_work(1), _work(2), _work(-1)])  # -1: refused as bad input, takes no slot
    assert set(driver.active) == {1, 2} and generator.cancelled == []
    refused = _replies(outbox)
    assert [(r["id"], r["error"]["code"]) for r in refused] == [(-1, ErrorCode.BAD_REQUEST)]
    generator.next_events = [GenerationEvent(1, chunk="a"), GenerationEvent(2, chunk="b", result={"caption": "b"})]
    assert driver.run_unit(admission=False) >= 0.0
    replies = _replies(outbox)
    assert [(r["id"], "partial" in r) for r in replies] == [(1, True), (2, True), (2, False)]
    assert replies[-1]["result"] == {"caption": "b"} and set(driver.active) == {1}
    assert counters["decode_steps"] == 1 and driver.busy


def test_a_failing_unit_fails_every_active_request_and_frees_every_slot() -> None:
    generator = ScriptedGenerator()
    driver, outbox, _ = _driver(generator)
    driver.admit([_work(1), _work(2)])
    generator.fail_with = RuntimeError("device fault")
    driver.run_unit(admission=False)
    replies = _replies(outbox)
    assert sorted(r["id"] for r in replies) == [1, 2]
    assert all(r["error"]["code"] == ErrorCode.INTERNAL for r in replies)
    assert sorted(generator.cancelled) == [1, 2] and not driver.active and not driver.busy


def test_a_failed_launch_is_charged_and_answered_and_leaves_no_step() -> None:
    generator = ScriptedGenerator()
    driver, outbox, _ = _driver(generator)
    driver.admit([_work(1)])
    generator.fail_with = RuntimeError("launch fault")
    charge_s = driver.launch_step(watch_sync=True)
    assert charge_s is not None and charge_s >= 0.0
    assert driver.step is None and [r["error"]["code"] for r in _replies(outbox)] == [ErrorCode.INTERNAL]


def test_a_step_is_charged_without_the_acts_beside_it() -> None:
    generator = ScriptedGenerator()
    driver, _, counters = _driver(generator)
    driver.admit([_work(1)])
    assert driver.launch_step(watch_sync=False) is None and driver.step is not None
    driver.act_beside_step(10.0)  # an act batch "took" 10 s beside the step: none of it is generation's
    assert driver.step_done() is False
    assert driver.finish_step() == 0.0
    assert counters["decode_steps_overlapped"] == 1 and driver.step is None


def test_launches_found_done_at_once_are_reported_synchronous() -> None:
    generator = ScriptedGenerator()
    generator.done_at_launch = True  # as a CPU model, whose launch computes the step
    driver, _, _ = _driver(generator)
    driver.admit([_work(1)])
    for _ in range(SYNC_LAUNCHES_TO_STOP):
        assert not driver.launches_synchronous
        driver.launch_step(watch_sync=True)
        driver.finish_step()
    assert driver.launches_synchronous


def test_release_frees_a_slot_once_and_shutdown_hands_back_the_rest() -> None:
    generator = ScriptedGenerator()
    driver, _, counters = _driver(generator)
    first, second = _work(1), _work(2)
    driver.admit([first, second])
    driver.release(first)
    driver.release(first)  # already freed: nothing more
    assert generator.cancelled == [1] and counters["generation_cancelled"] == 1
    driver.launch_step(watch_sync=False)
    assert driver.shutdown() == [second]
    assert generator.cancelled == [1, 2] and not generator.launched and not driver.busy
