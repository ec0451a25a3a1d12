"""The inference loop's side of generation: admitted requests, units, and the decode step in flight.

The loop (bridge/inference_loop.py) decides *when* generation runs (through the scheduling
policy); this module runs what it decided on the generator and turns the generator's events
into replies: it admits requests into KV slots, runs an admission unit or a decode step, or
launches a decode step and finishes it later (overlap), and frees a slot when its request
ends. Every failure of a generator call goes through one path (:meth:`GenerationDriver.fail_all`):
each active request gets the error and its slot is freed. It returns the seconds to charge to
generation and never charges the policy itself. Loop thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.work import Outbox, Work
from models.interfaces import GenerationEvent, Generator, InputError, ReadyWork

logger = logging.getLogger(__name__)

STEP_POLL_S = 0.0002  # while a launched step is in flight: how often decode_step_done() is asked near its end
STEP_WAKE_FRACTION = 0.9  # first look at the step after this fraction of its expected duration
SYNC_LAUNCHES_TO_STOP = 2  # launches found already done in a row: launching beside acts is pointless


@dataclass
class StepInFlight:
    """A launched decode step: when, for how many sequences, and the act time spent beside it."""

    launched_s: float
    rows: int
    overlapped_s: float = 0.0
    acts: int = 0  # act batches run beside it


class GenerationDriver:
    """Runs the loaded generator for the loop; ``active`` maps each admitted request's key to its work."""

    def __init__(self, generator: Generator, outbox: Outbox, counters: dict[str, int]) -> None:
        self.generator = generator
        self.outbox = outbox
        self.counters = counters  # the loop state's counters: units run, steps overlapped, cancellations
        self.active: dict[int, Work] = {}  # generation key -> admitted work (admitting or decoding)
        self.step: StepInFlight | None = None  # the launched decode step (overlap), if any
        query = getattr(generator, "decode_step_done", None)
        # the generator's optional decode_step_done(), looked up once (None: it has none)
        self.step_done_query: Callable[[], bool] | None = query if callable(query) else None
        self.launches_synchronous = False  # set once launches are found to compute the step (CPU)
        self._step_estimate_s = 0.0  # moving average of launched steps' observed durations (no act beside)
        self._sync_launches = 0  # consecutive launches already done when launch_decode_step() returned

    @property
    def can_launch(self) -> bool:
        """Whether the generator can split a decode step (launch it, finish it later)."""
        g = self.generator
        return callable(getattr(g, "launch_decode_step", None)) and callable(getattr(g, "finish_decode_step", None))

    @property
    def busy(self) -> bool:
        """Requests hold slots or a step is in flight."""
        return bool(self.active) or self.step is not None

    def ready(self) -> ReadyWork:
        return self.generator.ready()

    def free_slots(self) -> int:
        return self.generator.free_slots()

    # ------------------------------------------------------------------ admission and units

    def admit(self, works: Iterable[Work]) -> None:
        """Admit requests into free slots (cheap: no device work); a refused one is answered."""
        for work in works:
            work.started_s = time.perf_counter()
            key = work.payload.key
            try:
                self.generator.admit(work.payload)
            except Exception as exc:
                if not isinstance(exc, InputError):  # bad input takes no slot; anything else may have
                    self.generator.cancel(key)
                self.outbox.fail(work, exc, "generation")
                continue
            self.active[key] = work

    def run_unit(self, admission: bool) -> float:
        """One admission unit or decode step and its events -> the seconds the generator call took."""
        start = time.perf_counter()
        decoding = len(self.active)
        try:
            events = self.generator.admission_unit() if admission else self.generator.decode_step()
        except Exception as exc:
            self.fail_all(exc, "admission" if admission else f"decode step ({decoding} sequences)")
            return time.perf_counter() - start
        end_s = time.perf_counter()
        self._done(events, admission, start, decoding, end_s)
        return end_s - start

    # ------------------------------------------------------------------ a decode step in flight (overlap)

    def launch_step(self, watch_sync: bool) -> float | None:
        """Launch a decode step and leave it in flight -> None, or the seconds to charge to
        generation when the launch failed. ``watch_sync``: check whether the launch already did
        the step's work (a CPU model computes in the launch); after SYNC_LAUNCHES_TO_STOP such
        launches in a row ``launches_synchronous`` is set."""
        assert self.step is None
        rows = len(self.active)
        launched_s = time.perf_counter()
        try:
            self.generator.launch_decode_step()
        except Exception as exc:
            self.fail_all(exc, f"decode step launch ({rows} sequences)")
            return time.perf_counter() - launched_s
        self.step = StepInFlight(launched_s, rows)
        query = self.step_done_query
        if query is not None and watch_sync and rows:
            try:
                self._sync_launches = self._sync_launches + 1 if query() else 0
            except Exception:
                self._sync_launches = 0  # finish_decode_step() reports it, through the one error path
            if self._sync_launches >= SYNC_LAUNCHES_TO_STOP and not self.launches_synchronous:
                self.launches_synchronous = True
                logger.info("decode step launches are synchronous: no decode step launched beside act batches")
        return None

    def act_beside_step(self, elapsed_s: float) -> None:
        """An act batch of ``elapsed_s`` ran while the step was in flight (not charged to it)."""
        assert self.step is not None
        self.step.overlapped_s += elapsed_s
        self.step.acts += 1

    def step_done(self) -> bool:
        """Whether the launched step can be finished without waiting. A generator without
        ``decode_step_done`` gets one act batch beside the step, then the step is finished."""
        step = self.step
        assert step is not None
        query = self.step_done_query
        if query is None:
            return step.acts > 0
        try:
            done = bool(query())
        except Exception:
            return True  # let finish_decode_step() raise it, through the one error path
        if done and not step.acts:  # a step alone: learn its duration (observed, so at most late)
            observed_s = time.perf_counter() - step.launched_s
            self._step_estimate_s = (
                observed_s if not self._step_estimate_s else 0.8 * self._step_estimate_s + 0.2 * observed_s
            )
        return done

    def await_step(self, wait_inbox: Callable[[float], bool]) -> float | None:
        """Generation's turn with a step in flight: wait until it is done or new work arrives
        (``wait_inbox(timeout_s)`` -> whether something came; an ``act`` arriving now may run
        beside the step). -> the seconds to charge when the step was finished here, else None."""
        step = self.step
        assert step is not None
        if self.step_done_query is None:
            return self.finish_step()  # nothing to wait on but the step itself
        wake_s = step.launched_s + STEP_WAKE_FRACTION * self._step_estimate_s
        while not self.step_done():
            if wait_inbox(max(wake_s - time.perf_counter(), STEP_POLL_S)):
                return None
        return None

    def finish_step(self) -> float:
        """Finish the step in flight and dispatch its events -> the seconds to charge to
        generation: the loop time the step held on its own, not the act batches beside it."""
        step = self.step
        assert step is not None
        self.step = None
        try:
            events = self.generator.finish_decode_step()
        except Exception as exc:
            self.fail_all(exc, f"decode step ({step.rows} sequences)")
            events = None
        end_s = time.perf_counter()
        if events is not None:
            if step.acts:
                self.counters["decode_steps_overlapped"] += 1
            self._done(events, False, step.launched_s, step.rows, end_s)
        return max(0.0, end_s - step.launched_s - step.overlapped_s)

    # ------------------------------------------------------------------ ending requests

    def release(self, work: Work) -> None:
        """``work`` ends now (cancelled, expired): free its slot if it holds one."""
        key = getattr(work.payload, "key", None)
        if key is not None and self.active.pop(key, None) is not None:
            self.generator.cancel(key)
            self.counters["generation_cancelled"] += 1

    def fail_all(self, exc: Exception, what: str) -> None:
        """The one error path of generator calls: every active request fails, its slot is freed."""
        for key, work in list(self.active.items()):
            self.generator.cancel(key)
            self.outbox.fail(work, exc, what)
        self.active.clear()

    def shutdown(self) -> list[Work]:
        """Finish the step in flight (nothing stays outstanding on the device; its events go
        nowhere), free every slot -> the works that held one, for the loop to answer."""
        if self.step is not None:
            self.step = None
            try:
                self.generator.finish_decode_step()
            except Exception:
                logger.exception("finishing the decode step in flight at shutdown")
        works = list(self.active.values())
        for key in list(self.active):
            self.generator.cancel(key)
        self.active.clear()
        return works

    # ------------------------------------------------------------------ events

    def _done(
        self, events: list[GenerationEvent], admission: bool, start_s: float, decoding: int, end_s: float
    ) -> None:
        unit_ms = (end_s - start_s) * 1000.0
        self.counters["admission_units" if admission else "decode_steps"] += 1
        if not admission:
            for decoded in self.active.values():
                decoded.compute_ms += unit_ms
                decoded.batch_size = max(decoded.batch_size, decoding)
        for event in events:
            work = self.active.get(event.key)
            if work is None:
                continue
            if event.chunk and work.payload.stream:
                self.outbox.partial(work, event.chunk)
            if event.result is not None:
                del self.active[event.key]
                self.outbox.success(work, event.result)
