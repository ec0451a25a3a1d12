"""The inference loop: one thread that owns the models and the device.

Per iteration (see docs/architecture.md):
1. take everything waiting in the inbox; validate ``act`` observations and bucket them by shape;
2. control first: run one forward per shape bucket (up to ``max_batch`` each) and reply;
3. otherwise advance the VLM: admit one waiting generation request into a free slot, or run
   one ``Generator.step()``: a unit of admission work (a few crops, a prefill) or one decode
   step for all decoding sequences together.
Because VLM work advances one unit at a time, an ``act`` waits at most one such unit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from bridge.config import BridgeConfig, resolve_device
from bridge.protocol import OP_ACT, OP_RESET, ErrorCode, ProtocolError
from bridge.work import Outbox, Work
from models import model_kinds
from models.interfaces import ActPolicy, GenerationEvent, Generator, InputError, ModelInfo

logger = logging.getLogger(__name__)

PolicyLoader = Callable[..., ActPolicy]
GeneratorLoader = Callable[..., Generator]

_IDLE_WAIT_S = 0.05
_GPU_MEMORY_EVERY_S = 1.0


@dataclass(frozen=True)
class LoadedModel:
    role: str  # "policy" | "vlm"
    info: ModelInfo
    description: dict[str, Any]
    stats: dict[str, Any] | None = None
    skills: tuple[str, ...] = ()


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
    counters: dict[str, int] = field(default_factory=lambda: {"act_batches": 0, "act_requests": 0, "decode_steps": 0})


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
        self._buckets: dict[Hashable, deque[Work]] = {}
        self._gen_waiting: deque[Work] = deque()
        self._gen_active: dict[int, Work] = {}
        self._control: deque[Work] = deque()
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
        policy = self._load_policy(self.config.policy.spec(), device, dtype)
        policy.warmup()
        self._policy = policy
        self.state.policy = LoadedModel("policy", policy.info, policy.describe(), policy.stats())
        if self.config.vlm.enabled:
            generator = self._load_generator(self.config.vlm.spec(), device, dtype)
            generator.warmup()
            self._generator = generator
            self.state.vlm = LoadedModel("vlm", generator.info, generator.describe(), None, tuple(generator.skills()))
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

            self.state.gpu_memory_gb = torch.cuda.memory_allocated() / 2**30

    def _has_work(self) -> bool:
        return bool(self._buckets or self._gen_waiting or self._control or self._gen_active)

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
            while self._control:
                self._run_control(self._control.popleft())
            if self._buckets:
                self._wait_for_stragglers()
                self._run_act_batches()
                continue
            if self._gen_waiting and self._generator is not None and self._generator.free_slots() > 0:
                self._admit(self._gen_waiting.popleft())
                continue
            if self._gen_active:
                self._step()

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
        if work.op == OP_ACT:
            policy = self._policy
            if policy is None:
                self.outbox.error(work, ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "no policy is loaded"))
                return
            try:
                policy.validate(work.payload)
                key = policy.batch_key(work.payload)
            except Exception as exc:
                self.outbox.fail(work, exc, "validation")
                return
            self._buckets.setdefault(key, deque()).append(work)
        elif work.op == OP_RESET:
            self._control.append(work)
        else:
            self._gen_waiting.append(work)

    def _run_control(self, work: Work) -> None:
        work.started_s = time.perf_counter()
        try:
            if self._policy is not None:
                self._policy.reset(work.payload)
            self.outbox.success(work, {})
        except Exception:
            logger.exception("reset failed")
            self.outbox.error(work, ProtocolError(ErrorCode.INTERNAL, "reset failed"))

    def _wait_for_stragglers(self) -> None:
        """With ``max_wait_ms`` > 0, let a small batch grow until its oldest request waited that long."""
        max_wait_s = self.config.batching.max_wait_ms / 1000.0
        if max_wait_s <= 0 or self._gen_active:
            return
        oldest = min(bucket[0].received_s for bucket in self._buckets.values())
        while sum(map(len, self._buckets.values())) < self.config.batching.max_batch:
            remaining_s = oldest + max_wait_s - time.perf_counter()
            if remaining_s <= 0:
                return
            try:
                self._accept(self.inbox.get(timeout=remaining_s))
            except queue.Empty:
                return

    def _run_act_batches(self) -> None:
        assert self._policy is not None
        max_batch = self.config.batching.max_batch
        for key in list(self._buckets):
            bucket = self._buckets[key]
            now = time.perf_counter()
            batch: list[Work] = []
            while bucket and len(batch) < max_batch:
                work = bucket.popleft()
                if work.expired(now):
                    self.outbox.error(work, ProtocolError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed while queued"))
                else:
                    batch.append(work)
            if not bucket:
                del self._buckets[key]
            if batch:
                self._forward(batch)

    def _forward(self, batch: list[Work]) -> None:
        assert self._policy is not None
        start = time.perf_counter()
        try:
            actions = self._policy.act([w.payload for w in batch])  # (B, H, action_dim)
        except Exception:
            logger.exception("policy forward failed for a batch of %d", len(batch))
            for work in batch:
                self.outbox.error(work, ProtocolError(ErrorCode.INTERNAL, "policy forward failed"))
            return
        compute_ms = (time.perf_counter() - start) * 1000.0
        self.state.counters["act_batches"] += 1
        self.state.counters["act_requests"] += len(batch)
        for i, work in enumerate(batch):
            work.started_s, work.compute_ms, work.batch_size = start, compute_ms, len(batch)
            self.outbox.success(work, {"actions": actions[i], "action": actions[i, 0]})

    def _admit(self, work: Work) -> None:
        assert self._generator is not None
        now = time.perf_counter()
        if work.expired(now):
            self.outbox.error(work, ProtocolError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed while queued"))
            return
        work.started_s = now
        key = work.payload.key
        try:
            events = self._generator.admit(work.payload)
        except Exception as exc:
            if not isinstance(exc, InputError):  # bad input takes no slot; anything else may have
                self._generator.cancel(key)
            self.outbox.fail(work, exc, "generation")
            return
        work.compute_ms += (time.perf_counter() - now) * 1000.0
        self._gen_active[key] = work
        self._dispatch(events)

    def _step(self) -> None:
        assert self._generator is not None
        start = time.perf_counter()
        active = len(self._gen_active)
        try:
            events = self._generator.step()
        except Exception:
            logger.exception("decode step failed; failing %d active sequences", active)
            for key, work in list(self._gen_active.items()):
                self._generator.cancel(key)
                self.outbox.error(work, ProtocolError(ErrorCode.INTERNAL, "generation failed"))
            self._gen_active.clear()
            return
        step_ms = (time.perf_counter() - start) * 1000.0
        self.state.counters["decode_steps"] += 1
        for work in self._gen_active.values():
            work.compute_ms += step_ms
            work.batch_size = max(work.batch_size, active)
        self._dispatch(events)

    def _dispatch(self, events: list[GenerationEvent]) -> None:
        for event in events:
            work = self._gen_active.get(event.key)
            if work is None:
                continue
            if event.chunk and work.payload.stream:
                self.outbox.partial(work, event.chunk)
            if event.error is not None:
                del self._gen_active[event.key]
                self.outbox.error(work, ProtocolError(ErrorCode.BAD_REQUEST, event.error))
            elif event.result is not None:
                del self._gen_active[event.key]
                self.outbox.success(work, event.result)

    def _fail_everything(self, exc: ProtocolError) -> None:
        while True:
            try:
                self._accept(self.inbox.get_nowait())
            except queue.Empty:
                break
        pending = [w for bucket in self._buckets.values() for w in bucket]
        pending += [*self._gen_waiting, *self._control, *self._gen_active.values()]
        if self._generator is not None:
            for key in list(self._gen_active):
                self._generator.cancel(key)
        self._buckets.clear()
        self._gen_waiting.clear()
        self._control.clear()
        self._gen_active.clear()
        for work in pending:
            self.outbox.error(work, exc)
