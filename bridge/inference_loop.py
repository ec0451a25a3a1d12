"""The inference loop: one thread that owns the models and the device.

Per iteration (see docs/architecture.md):
1. take everything waiting in the inbox (validate ``act`` observations, apply ``cancel`` notes);
   end cancelled work and work whose deadline passed (queued, admitting or decoding);
2. run control work (``reset``); admit waiting generation requests into free KV slots;
3. ask the scheduling policy (bridge/scheduling_policy.py) for the next device unit: one act
   batch, one admission unit or one decode step; run it and charge its time to the policy
   (generation's units, slots and step in flight are run by bridge/generation_driver.py).
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

from bridge.config import BridgeConfig, resolve_device
from bridge.generation_driver import GenerationDriver
from bridge.loop_state import LoadedModel, LoopState
from bridge.protocol import OP_ACT, OP_CANCEL, OP_RESET, ErrorCode, ProtocolError
from bridge.scheduling_policy import Decision, SchedulingPolicy, Unit, bucket_size
from bridge.work import Outbox, Work
from models import model_kinds
from models.interfaces import ActPolicy, Generator, Observation, ReadyWork

logger = logging.getLogger(__name__)

PolicyLoader = Callable[..., ActPolicy]
GeneratorLoader = Callable[..., Generator]

_IDLE_WAIT_S = 0.05
_DECODE = Decision(Unit.DECODE)  # what a decode step's time is charged as (launched, awaited, finished)
_GPU_MEMORY_EVERY_S = 1.0
_NOTHING_READY = ReadyWork()  # what the loop reports without a generator


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
        self._generation: GenerationDriver | None = None  # the loaded generator, driven (loop thread)
        self.policy = self._new_policy()
        # the policy's optional prepare(obs), run by the threads that parse acts (the VTLA stages frames)
        self.act_prepare: Callable[[Observation], Observation] | None = None
        # padding, resolved once at load: a policy that pads to its own buckets (the VTLA's bucket_for
        # and last_bucket) is never padded by the loop as well
        self._pads_itself = False
        self._bucket_of: Callable[[int], int] = lambda rows: rows
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
        policy.launch_beside_acts = self._launch_beside_acts(policy.overlap)
        return policy

    def _launch_beside_acts(self, overlap: bool) -> bool:
        """A step is launched beside an act batch only where the loop can tell the launch is
        asynchronous (decode_step_done() says "not yet" right after it; GenerationDriver.launch_step)."""
        return overlap and self._generation is not None and self._generation.step_done_query is not None

    def _overlap_enabled(self) -> bool:
        """``[scheduler] overlap`` and a generator that can launch a decode step (else plain decode_step())."""
        return self.config.scheduler.overlap and self._generation is not None and self._generation.can_launch

    @property
    def generator(self) -> Generator | None:
        """The loaded generator, for its thread-safe ``prepare`` (None until loaded)."""
        return self._generation.generator if self._generation is not None else None

    @property
    def decode_step_in_flight(self) -> bool:
        """Whether a launched decode step is not finished yet (overlap)."""
        return self._generation is not None and self._generation.step is not None

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
            self._generation = GenerationDriver(generator, self.outbox, self.state.counters)
            self.state.vlm = LoadedModel("vlm", generator.info, generator.describe(), None, tuple(generator.skills()))
            self.policy.overlap = self._overlap_enabled()
            self.policy.launch_beside_acts = self._launch_beside_acts(self.policy.overlap)
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
        return self.policy.has_waiting() or (self._generation is not None and self._generation.busy)

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
            generation = self._generation
            if generation is not None and self.policy.generation:
                generation.admit(self.policy.admissions(generation.free_slots()))
            if generation is not None:
                self.state.generation_active = len(generation.active)
                self.state.generation_waiting = len(self.policy.generation)
            if generation is not None and generation.step is not None and generation.step_done():
                self.policy.charge(_DECODE, generation.finish_step())
                continue
            step_in_flight = generation is not None and generation.step is not None
            ready = generation.ready() if generation is not None else _NOTHING_READY
            decision = self.policy.schedule(ready, step_in_flight=step_in_flight, now_s=time.perf_counter())
            if decision.unit is Unit.IDLE:
                if decision.hold_until_s is not None:  # acts hold for a periodic client due then
                    self.state.counters["act_holds"] = self.policy.holds
                    self._wait_inbox(max(0.0, decision.hold_until_s - time.perf_counter()))
                continue
            if decision.unit is Unit.FINISH_DECODE:
                assert generation is not None
                charge_s = generation.await_step(self._wait_inbox)
                if charge_s is not None:
                    self.policy.charge(_DECODE, charge_s)
                continue
            if decision.unit is Unit.DECODE and self.policy.overlap:
                self.state.counters["admissions_deferred"] = self.policy.admissions_deferred
                self._launch_step()  # in flight; acts may run beside it before it is finished
                continue
            if decision.unit is Unit.ACT and not step_in_flight and self._wait_for_stragglers(decision):
                continue  # the batch grew: decide again with the stragglers in it
            if decision.launch_decode:
                self._launch_step()
            start = time.perf_counter()
            model_s = self._execute(decision)
            elapsed_s = time.perf_counter() - start
            if decision.unit is Unit.ACT and generation is not None and generation.step is not None:
                generation.act_beside_step(elapsed_s)
            self.policy.charge(decision, model_s)

    def _execute(self, decision: Decision) -> float:
        """Run the unit -> the seconds its model call took: what the policy is charged (the device's
        time, not the replies' encoding and sending after it, which cost a decode step of 8 streams
        about a fifth of its time here and an act batch a few per cent)."""
        if decision.unit is Unit.ACT:
            return self._forward(list(decision.batch))
        if decision.unit in (Unit.ADMISSION, Unit.DECODE):
            assert self._generation is not None
            return self._generation.run_unit(admission=decision.unit is Unit.ADMISSION)
        return 0.0

    def _launch_step(self) -> None:
        """Launch a decode step (charged to generation only if the launch failed)."""
        generation = self._generation
        assert generation is not None
        failed_s = generation.launch_step(watch_sync=self.policy.launch_beside_acts)
        if failed_s is not None:
            self.policy.charge(_DECODE, failed_s)
        if generation.launches_synchronous:  # the launch computes the step (CPU): keep the old order
            self.policy.launch_beside_acts = False

    def _wait_inbox(self, timeout_s: float) -> bool:
        """Take what arrives within ``timeout_s`` (and everything queued behind it) -> whether anything came."""
        try:
            work = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return False
        self._accept(work)
        self._intake(block=False)
        return True

    def _intake(self, block: bool) -> None:
        inbox = self.inbox  # (this thread is its only consumer: empty() then get_nowait() is safe)
        if block and inbox.empty():
            try:
                self._accept(inbox.get(timeout=_IDLE_WAIT_S))
            except queue.Empty:
                return
        while not inbox.empty():  # (no queue.Empty raised at the end of every intake)
            self._accept(inbox.get_nowait())

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
        if self._generation is not None:
            self._generation.release(work)
        self.outbox.error(work, exc)  # sets work.done: queued copies are pruned below

    def _end_cancelled_and_expired(self, now_s: float) -> None:
        """Flagged work ends; generation whose deadline passed during generation ends too."""
        for work in list(self._generation.active.values()) if self._generation is not None else ():
            if work.cancel_code is not None:
                self._end(work, _ended(work.cancel_code))
            elif work.expired(now_s):
                self._end(work, ProtocolError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed during generation"))
        for waiting in (self.policy.acts, self.policy.generation):
            if not waiting.queues:
                continue
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
        if max_wait_s <= 0:  # (the default: lowest latency)
            return False
        batch = decision.batch
        generating = self._generation is not None and bool(self._generation.active)
        if generating or len(batch) >= self.config.batching.max_batch:
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

    def _fail_everything(self, exc: ProtocolError) -> None:
        while True:
            try:
                self._accept(self.inbox.get_nowait())
            except queue.Empty:
                break
        pending = [*self.policy.acts, *self.policy.generation, *self.policy.control]
        if self._generation is not None:
            pending += self._generation.shutdown()
        self.policy = self._new_policy()
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
