"""The inference loop: one thread that owns the models and the device.

Per iteration (see docs/architecture.md):
1. take everything waiting in the inbox (validate ``act`` observations, apply ``cancel`` notes);
   end cancelled work and work whose deadline passed (queued, admitting or decoding);
2. run control work (``reset``); admit waiting generation requests into free KV slots;
3. ask the scheduling policy (bridge/scheduling_policy.py) for the next device unit: one act
   batch, one admission unit or one decode step; run it and charge its time to the policy.
Because generation advances one bounded unit at a time, an ``act`` waits at most one unit
when it arrives, and the policy's budgets keep generation progressing while acts saturate.

With ``[scheduler] overlap`` and a generator that can split a decode step
(``launch_decode_step`` / ``finish_decode_step``), a decode step is launched and left in flight
(GPU: a normal-priority stream) while the loop goes on: act batches run beside it (the policy's
``launch_decode`` and ``step_in_flight`` decisions), and the step is finished when its device
work is done (``decode_step_done()``, when the generator has it) or when generation's turn comes.
For a CPU model whose launch computes the step, this is the old order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.config import BridgeConfig, resolve_device
from bridge.protocol import OP_ACT, OP_CANCEL, OP_RESET, ErrorCode, ProtocolError
from bridge.scheduling_policy import Decision, SchedulingPolicy, Unit, bucket_size
from bridge.work import Outbox, Work
from models import model_kinds
from models.interfaces import ActPolicy, GenerationEvent, Generator, InputError, ModelInfo, Observation, ReadyWork

logger = logging.getLogger(__name__)

PolicyLoader = Callable[..., ActPolicy]
GeneratorLoader = Callable[..., Generator]

_IDLE_WAIT_S = 0.05
_STEP_POLL_S = 0.0002  # while a launched step is in flight: how often decode_step_done() is asked near its end
_STEP_WAKE_FRACTION = 0.9  # first look at the step after this fraction of its expected duration
_GPU_MEMORY_EVERY_S = 1.0


@dataclass(frozen=True)
class LoadedModel:
    role: str  # "policy" | "vlm"
    info: ModelInfo
    description: dict[str, Any]
    stats: dict[str, Any] | None = None
    skills: tuple[str, ...] = ()
    frame_staging: Callable[[], dict[str, Any]] | None = None  # the policy's staging_stats(), if any


@dataclass
class LoopState:
    """Written only by the loop thread; read (attribute by attribute) by the I/O thread."""

    status: str = "loading"  # loading | ok | degraded | stopping
    detail: str = ""
    device: str = "unknown"
    dtype: str = "unknown"
    cuda_available: bool = False
    gpu_memory_gb: float | None = None
    policy: LoadedModel | None = None
    vlm: LoadedModel | None = None
    generation_active: int = 0  # requests holding a KV slot (admitting or decoding), per iteration
    generation_waiting: int = 0  # generation requests waiting for a slot
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "act_batches": 0,
            "act_requests": 0,
            "admission_units": 0,
            "decode_steps": 0,
            "decode_steps_overlapped": 0,  # decode steps an act batch ran beside (overlap)
            "act_holds": 0,  # times the acts held for a periodic client's act due (anticipation)
            "generation_cancelled": 0,
        }
    )


@dataclass
class _StepInFlight:
    """A launched decode step: when, for how many sequences, and the act time spent beside it."""

    launched_s: float
    rows: int
    overlapped_s: float = 0.0
    acts: int = 0  # act batches run beside it


def _shutting_down() -> ProtocolError:
    return ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "the server is shutting down")


class InferenceLoop:
    def __init__(
        self,
        config: BridgeConfig,
        outbox: Outbox,
        load_policy: PolicyLoader = model_kinds.load_policy,
        load_generator: GeneratorLoader = model_kinds.load_generator,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.state = LoopState()
        self.inbox: queue.SimpleQueue[Work] = queue.SimpleQueue()
        self._load_policy = load_policy
        self._load_generator = load_generator
        self._policy: ActPolicy | None = None
        self._generator: Generator | None = None
        self.policy = self._new_policy()
        self._gen_active: dict[int, Work] = {}  # generation key -> admitted work (admitting or decoding)
        self._step: _StepInFlight | None = None  # the launched decode step (overlap), if any
        # the generator's optional decode_step_done(), looked up once at load (None: it has none)
        self._step_done_query: Callable[[], bool] | None = None
        # the policy's optional prepare(obs), run by the threads that parse acts (the VTLA stages frames)
        self.act_prepare: Callable[[Observation], Observation] | None = None
        # padding, resolved once at load: a policy that pads to its own buckets (the VTLA's bucket_for
        # and last_bucket) is never padded by the loop as well
        self._pads_itself = False
        self._bucket_of: Callable[[int], int] = lambda rows: rows
        self._step_estimate_s = 0.0  # moving average of launched steps' observed durations (no act beside)
        self._sync_launches = 0  # consecutive launches already done when launch_decode_step() returned
        self._stop_at: float | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-loop", daemon=True)

    # ------------------------------------------------------------------ lifecycle (other threads)

    def start(self) -> None:
        self._thread.start()

    def submit(self, work: Work) -> None:
        self.inbox.put(work)

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        return self._ready.wait(timeout_s)

    def stop(self, grace_s: float) -> None:
        """Finish queued and active work for up to ``grace_s``, then fail the rest."""
        self._stop_at = time.perf_counter() + grace_s
        self.state.status = "stopping"

    def _new_policy(self) -> SchedulingPolicy:
        sched = self.config.scheduler
        policy = SchedulingPolicy(
            self.config.batching.max_batch, sched.vlm_min_share, sched.admission_share, sched.max_batch_ms,
            overlap=self._overlap_enabled(), anticipation_share=sched.anticipation_share,
        )
        policy.set_batch_key(lambda work: work.batch_key)
        return policy

    def _overlap_enabled(self) -> bool:
        """``[scheduler] overlap`` and a generator that can launch a decode step (else plain decode_step())."""
        generator = self._generator
        return bool(
            self.config.scheduler.overlap
            and generator is not None
            and callable(getattr(generator, "launch_decode_step", None))
            and callable(getattr(generator, "finish_decode_step", None))
        )

    @property
    def generator(self) -> Generator | None:
        """The loaded generator, for its thread-safe ``prepare`` (None until loaded)."""
        return self._generator

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:
            logger.exception("model loading failed")
            self.state.detail = f"model loading failed: {type(exc).__name__}: {exc}"
            self.state.status = "degraded"
        finally:
            self._ready.set()
        try:
            self._serve()
        finally:
            self._fail_everything(_shutting_down())

    def _load(self) -> None:
        device, dtype = resolve_device(self.config.device)
        import torch

        self.state.device, self.state.dtype = device, dtype
        if self.config.device.cpu_threads:
            torch.set_num_threads(self.config.device.cpu_threads)
        self.state.cuda_available = torch.cuda.is_available()
        if device.startswith("cuda:"):  # one server per GPU: this thread's default device is its own
            torch.cuda.set_device(device)
        policy = self._load_policy(self.config.policy.spec(), device, dtype)
        policy.warmup()
        prepare = getattr(policy, "prepare", None)
        self.act_prepare = prepare if callable(prepare) else None
        self._policy = policy
        self._pads_itself = hasattr(policy, "last_bucket")
        self._bucket_of = self._bucket_function(policy)
        self.policy.set_bucket_of(self._bucket_of)
        staging = getattr(policy, "staging_stats", None)
        self.state.policy = LoadedModel(
            "policy", policy.info, policy.describe(), policy.stats(),
            frame_staging=staging if callable(staging) else None,
        )  # fmt: skip
        if self.config.vlm.enabled:
            generator = self._load_generator(self.config.vlm.spec(), device, dtype)
            generator.warmup()
            self._generator = generator
            self.state.vlm = LoadedModel("vlm", generator.info, generator.describe(), None, tuple(generator.skills()))
            query = getattr(generator, "decode_step_done", None)
            self._step_done_query = query if callable(query) else None
            self.policy.overlap = self._overlap_enabled()
            # a step is launched beside an act batch only where the loop can tell the launch is
            # asynchronous (decode_step_done() says "not yet" right after it); see _launch_step
            self.policy.launch_beside_acts = self.policy.overlap and self._step_done_query is not None
        for loaded in (self.state.policy, self.state.vlm):
            if loaded is not None and loaded.info.random_weights:
                logger.warning(
                    "%s (%s) has RANDOM WEIGHTS: its outputs are meaningless", loaded.info.name, loaded.info.source
                )
        self._update_gpu_memory()
        if self.state.status == "loading":
            self.state.status = "ok"

    def _update_gpu_memory(self) -> None:
        if self.state.cuda_available and self.state.device.startswith("cuda"):
            import torch

            self.state.gpu_memory_gb = torch.cuda.memory_allocated(self.state.device) / 2**30

    def _has_work(self) -> bool:
        return self.policy.has_waiting() or bool(self._gen_active) or self._step is not None

    def _serve(self) -> None:
        last_memory_s = time.perf_counter()
        while True:
            self._intake(block=not self._has_work())
            now = time.perf_counter()
            if self._stop_at is not None and (now > self._stop_at or not self._has_work()):
                return
            if now - last_memory_s > _GPU_MEMORY_EVERY_S:
                self._update_gpu_memory()
                last_memory_s = now
            self._end_cancelled_and_expired(now)
            while self.policy.control:
                self._run_control(self.policy.control.popleft())
            self._admit_waiting()
            self.state.generation_active = len(self._gen_active)
            self.state.generation_waiting = len(self.policy.generation)
            if self._step is not None and self._step_done():
                self._finish_step()
                continue
            ready = self._generator.ready() if self._generator is not None else ReadyWork()
            decision = self.policy.schedule(ready, step_in_flight=self._step is not None, now_s=time.perf_counter())
            if decision.unit is Unit.IDLE:
                if decision.hold_until_s is not None:  # acts hold for a periodic client due then
                    self.state.counters["act_holds"] = self.policy.holds
                    self._wait_inbox(max(0.0, decision.hold_until_s - time.perf_counter()))
                continue
            if decision.unit is Unit.FINISH_DECODE:
                self._await_step()
                continue
            if decision.unit is Unit.DECODE and self.policy.overlap:
                self._launch_step()  # in flight; acts may run beside it before it is finished
                continue
            if decision.unit is Unit.ACT and self._step is None and self._wait_for_stragglers(decision):
                continue  # the batch grew: decide again with the stragglers in it
            if decision.launch_decode:
                self._launch_step()
            start = time.perf_counter()
            model_s = self._execute(decision)
            elapsed_s = time.perf_counter() - start
            if decision.unit is Unit.ACT and self._step is not None:
                self._step.overlapped_s += elapsed_s
                self._step.acts += 1
            self.policy.charge(decision, model_s)

    def _execute(self, decision: Decision) -> float:
        """Run the unit -> the seconds its model call took: what the policy is charged (the device's
        time, not the replies' encoding and sending after it, which cost a decode step of 8 streams
        about a fifth of its time here and an act batch a few per cent)."""
        if decision.unit is Unit.ACT:
            return self._forward(list(decision.batch))
        if decision.unit is Unit.ADMISSION:
            return self._generation_unit(admission=True)
        if decision.unit is Unit.DECODE:
            return self._generation_unit(admission=False)
        return 0.0

    # ------------------------------------------------------------------ a decode step in flight (overlap)

    def _launch_step(self) -> None:
        generator = self._generator
        assert generator is not None and self._step is None
        rows = len(self._gen_active)
        launched_s = time.perf_counter()
        try:
            generator.launch_decode_step()
        except Exception as exc:
            self._generation_failed(exc, f"decode step launch ({rows} sequences)")
            self.policy.charge(Decision(Unit.DECODE), time.perf_counter() - launched_s)
            return
        self._step = _StepInFlight(launched_s, rows)
        query = self._step_done_query
        if query is not None and self.policy.launch_beside_acts and rows:
            try:
                self._sync_launches = self._sync_launches + 1 if query() else 0
            except Exception:
                self._sync_launches = 0  # finish_decode_step() reports it, through the one error path
            if self._sync_launches >= 2:  # the launch computes the step (CPU): keep the old order
                self.policy.launch_beside_acts = False
                logger.info("decode step launches are synchronous: no decode step launched beside act batches")

    def _step_done(self) -> bool:
        """Whether the launched step can be finished without waiting. A generator without
        ``decode_step_done`` gets one act batch beside the step, then the step is finished."""
        assert self._step is not None
        query = self._step_done_query
        if query is None:
            return self._step.acts > 0
        try:
            done = bool(query())
        except Exception:
            return True  # let finish_decode_step() raise it, through the one error path
        if done and not self._step.acts:  # a step alone: learn its duration (observed, so at most late)
            observed_s = time.perf_counter() - self._step.launched_s
            self._step_estimate_s = observed_s if not self._step_estimate_s else (
                0.8 * self._step_estimate_s + 0.2 * observed_s)
        return done

    def _await_step(self) -> None:
        """Generation's turn with a step in flight: wait until it is done or new work arrives (an
        ``act`` arriving now may run beside the step: the policy decides at the next iteration)."""
        assert self._step is not None
        if self._step_done_query is None:
            self._finish_step()  # nothing to wait on but the step itself
            return
        wake_s = self._step.launched_s + _STEP_WAKE_FRACTION * self._step_estimate_s
        while not self._step_done():
            timeout_s = max(wake_s - time.perf_counter(), _STEP_POLL_S)
            if self._wait_inbox(timeout_s):
                return

    def _wait_inbox(self, timeout_s: float) -> bool:
        """Take what arrives within ``timeout_s`` (and everything queued behind it) -> whether anything came."""
        try:
            work = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return False
        self._accept(work)
        self._intake(block=False)
        return True

    def _finish_step(self) -> None:
        generator, step = self._generator, self._step
        assert generator is not None and step is not None
        self._step = None
        try:
            events = generator.finish_decode_step()
        except Exception as exc:
            self._generation_failed(exc, f"decode step ({step.rows} sequences)")
            events = None
        end_s = time.perf_counter()
        if events is not None:
            if step.acts:
                self.state.counters["decode_steps_overlapped"] += 1
            self._generation_done(events, False, step.launched_s, step.rows, end_s)
        # generation is charged the loop time the step held on its own: not the act batches beside it
        self.policy.charge(Decision(Unit.DECODE), max(0.0, end_s - step.launched_s - step.overlapped_s))

    def _intake(self, block: bool) -> None:
        try:
            work = self.inbox.get(timeout=_IDLE_WAIT_S) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._accept(work)
            try:
                work = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _accept(self, work: Work) -> None:
        if work.op == OP_CANCEL:
            self._cancel(work)
            return
        if work.cancel_code is not None:  # cancelled while it was being parsed
            self._end(work, _ended(work.cancel_code))
            return
        if work.op == OP_ACT:
            policy = self._policy
            if policy is None:
                self.outbox.error(work, ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "no policy is loaded"))
                return
            try:
                policy.validate(work.payload)
                work.batch_key = policy.batch_key(work.payload)
            except Exception as exc:
                self.outbox.fail(work, exc, "validation")
                return
            self.policy.add_act(work)
        elif work.op == OP_RESET:
            self.policy.control.append(work)
        else:
            self.policy.generation.push(work)

    # ------------------------------------------------------------------ cancellation and deadlines

    def _cancel(self, note: Work) -> None:
        """A ``cancel`` note from the I/O thread: end ``note.payload`` (the target Work) now."""
        target: Work = note.payload
        if not target.done:
            self._end(target, _ended(target.cancel_code or ErrorCode.CANCELLED))

    def _end(self, work: Work, exc: ProtocolError) -> None:
        """The final error of queued, admitting or decoding work; its KV slot is free for the next unit."""
        if work.done:
            return
        key = getattr(work.payload, "key", None)
        if key is not None and self._gen_active.pop(key, None) is not None and self._generator is not None:
            self._generator.cancel(key)
            self.state.counters["generation_cancelled"] += 1
        self.outbox.error(work, exc)  # sets work.done: queued copies are pruned below

    def _end_cancelled_and_expired(self, now_s: float) -> None:
        """Flagged work ends; generation whose deadline passed during generation ends too."""
        for work in list(self._gen_active.values()):
            if work.cancel_code is not None:
                self._end(work, _ended(work.cancel_code))
            elif work.expired(now_s):
                self._end(work, ProtocolError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed during generation"))
        for waiting in (self.policy.acts, self.policy.generation):
            ended = False
            for work in waiting:
                if work.done:
                    ended = True
                elif work.cancel_code is not None:
                    self._end(work, _ended(work.cancel_code))
                    ended = True
                elif work.expired(now_s):
                    self._end(work, ProtocolError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed while queued"))
                    ended = True
            if ended:  # rebuild the queues only when something left them
                waiting.prune(lambda work: work.done)

    # ------------------------------------------------------------------ units of work

    def _run_control(self, work: Work) -> None:
        work.started_s = time.perf_counter()
        try:
            if self._policy is not None:
                self._policy.reset(work.payload)
            self.outbox.success(work, {})
        except Exception as exc:
            self.outbox.fail(work, exc, "reset")

    def _wait_for_stragglers(self, decision: Decision) -> bool:
        """With ``max_wait_ms`` > 0 and no generation running, let a small batch grow until its oldest
        request waited that long. -> True when it grew (the batch is put back to be re-decided)."""
        max_wait_s = self.config.batching.max_wait_ms / 1000.0
        batch = decision.batch
        if max_wait_s <= 0 or self._gen_active or len(batch) >= self.config.batching.max_batch:
            return False
        deadline_s = min(w.received_s for w in batch) + max_wait_s
        grew = False
        while len(self.policy.acts) + len(batch) < self.config.batching.max_batch:
            remaining_s = deadline_s - time.perf_counter()
            if remaining_s <= 0:
                break
            try:
                self._accept(self.inbox.get(timeout=remaining_s))
                grew = True
            except queue.Empty:
                break
        if grew:
            for work in reversed(batch):
                self.policy.acts.push_front(work)
        return grew

    def _bucket_function(self, policy: ActPolicy) -> Callable[[int], int]:
        """rows -> the batch size a forward runs at: the policy's own buckets (the VTLA's
        ``bucket_for``), else the loop's padding (``[scheduler] pad_batches``), else ``rows``."""
        own = getattr(policy, "bucket_for", None)
        if callable(own):
            return lambda rows: int(own(rows))
        if self.config.scheduler.pad_batches:
            max_batch = self.config.batching.max_batch
            return lambda rows: bucket_size(rows, max_batch)
        return lambda rows: rows

    def _forward(self, batch: list[Work]) -> float:
        """One act forward and its replies -> the seconds ``act()`` took."""
        assert self._policy is not None
        batch = [w for w in batch if not w.done]  # a cancel applied while stragglers were awaited
        if not batch:
            return 0.0
        start = time.perf_counter()
        rows = len(batch)
        pads_itself = self._pads_itself  # it reports last_bucket; the loop pads only the others
        loop_pads = self.config.scheduler.pad_batches and not pads_itself
        bucket = self._bucket_of(rows) if loop_pads else rows
        payloads = [w.payload for w in batch] + [batch[-1].payload] * (bucket - rows)  # padding rows
        try:
            actions = self._policy.act(payloads)[:rows]  # (B, H, action_dim)
            if pads_itself:
                bucket = int(getattr(self._policy, "last_bucket", None) or rows)
        except Exception as exc:
            for work in batch:
                self.outbox.fail(work, exc, f"policy forward (batch of {rows})")
            return time.perf_counter() - start
        compute_ms = (time.perf_counter() - start) * 1000.0
        self.state.counters["act_batches"] += 1
        self.state.counters["act_requests"] += rows
        for i, work in enumerate(batch):
            work.started_s, work.compute_ms, work.batch_size = start, compute_ms, rows
            work.bucket = bucket if (loop_pads or pads_itself) else 0
            self.outbox.success(work, {"actions": actions[i], "action": actions[i, 0]})
        return compute_ms / 1000.0

    def _admit_waiting(self) -> None:
        generator = self._generator
        if generator is None or not self.policy.generation:
            return
        for work in self.policy.admissions(generator.free_slots()):
            work.started_s = time.perf_counter()
            key = work.payload.key
            try:
                generator.admit(work.payload)
            except Exception as exc:
                if not isinstance(exc, InputError):  # bad input takes no slot; anything else may have
                    generator.cancel(key)
                self.outbox.fail(work, exc, "generation")
                continue
            self._gen_active[key] = work

    def _generation_unit(self, admission: bool) -> float:
        """One admission unit or decode step and its events -> the seconds the generator call took."""
        generator = self._generator
        assert generator is not None
        start = time.perf_counter()
        decoding = len(self._gen_active)
        try:
            events = generator.admission_unit() if admission else generator.decode_step()
        except Exception as exc:
            self._generation_failed(exc, "admission" if admission else f"decode step ({decoding} sequences)")
            return time.perf_counter() - start
        end_s = time.perf_counter()
        self._generation_done(events, admission, start, decoding, end_s)
        return end_s - start

    def _generation_failed(self, exc: Exception, what: str) -> None:
        """The one error path of generation units: every active request fails, its slot is freed."""
        generator = self._generator
        assert generator is not None
        for key, work in list(self._gen_active.items()):
            generator.cancel(key)
            self.outbox.fail(work, exc, what)
        self._gen_active.clear()

    def _generation_done(
        self, events: list[GenerationEvent], admission: bool, start_s: float, decoding: int, end_s: float
    ) -> None:
        unit_ms = (end_s - start_s) * 1000.0
        self.state.counters["admission_units" if admission else "decode_steps"] += 1
        if not admission:
            for work in self._gen_active.values():
                work.compute_ms += unit_ms
                work.batch_size = max(work.batch_size, decoding)
        self._dispatch(events)

    def _dispatch(self, events: list[GenerationEvent]) -> None:
        for event in events:
            work = self._gen_active.get(event.key)
            if work is None:
                continue
            if event.chunk and work.payload.stream:
                self.outbox.partial(work, event.chunk)
            if event.result is not None:
                del self._gen_active[event.key]
                self.outbox.success(work, event.result)

    def _fail_everything(self, exc: ProtocolError) -> None:
        while True:
            try:
                self._accept(self.inbox.get_nowait())
            except queue.Empty:
                break
        pending = [*self.policy.acts, *self.policy.generation, *self.policy.control, *self._gen_active.values()]
        if self._step is not None and self._generator is not None:
            self._step = None
            try:  # nothing must stay outstanding on the device; the events go nowhere
                self._generator.finish_decode_step()
            except Exception:
                logger.exception("finishing the decode step in flight at shutdown")
        if self._generator is not None:
            for key in list(self._gen_active):
                self._generator.cancel(key)
        self.policy = self._new_policy()
        self._gen_active.clear()
        for work in pending:
            if not work.done:
                self.outbox.error(work, exc)


_END_MESSAGES = {
    ErrorCode.CANCELLED: "cancelled (by the client, or its stream could not be delivered)",
    ErrorCode.DEADLINE_EXCEEDED: "deadline passed",
}


def _ended(code: str) -> ProtocolError:
    """The final error of work the I/O thread flagged with ``cancel_code``."""
    return ProtocolError(code, _END_MESSAGES.get(code, "request ended"))
