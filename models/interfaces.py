"""The contract between the inference loop and the models it serves.

Two kinds of model sit behind the server:

* an :class:`ActPolicy` answers ``act``: single-shot, batched across clients (one forward per
  batch of observations that share a :meth:`ActPolicy.batch_key`);
* a :class:`Generator` answers the step-wise ops (``caption``, ``query``, ``detect``,
  ``point``): requests are *admitted* (image encode + prefill, in bounded admission units) and
  then all decoding sequences advance together, one decode step at a time. The generator only
  reports what work it has ready (:meth:`Generator.ready`); the server's scheduling policy
  (bridge/scheduling_policy.py) decides which unit runs when. A decode step can be split into
  :meth:`Generator.launch_decode_step` (enqueue the device work, return at once) and
  :meth:`Generator.finish_decode_step` (wait, return the events), so that the loop runs an
  ``act`` forward on a high-priority stream while the step is in flight.

This module must stay free of torch imports: the server's I/O side and the tests use it
without loading a model.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class InputError(ValueError):
    """An observation or generation request the model cannot serve (reported as bad_request)."""


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model, reported in ``hello``, ``health`` and the startup banner."""

    name: str
    kind: str
    device: str
    dtype: str
    random_weights: bool
    parameters: int
    source: str  # preset name or checkpoint directory


@dataclass(frozen=True)
class Observation:
    """One ``act`` request, decoded and validated by the server.

    ``images`` maps a camera name to an (H, W, 3) uint8 RGB array. A request's single ``image``
    argument arrives under the model's first camera name (``describe()["cameras"][0]``).
    ``staged`` maps a camera name to what the policy's optional ``prepare`` made of that frame
    off the loop thread (the VTLA: a row of a frame ring); ``images`` keeps every frame, so a
    policy can always fall back to it.
    """

    images: Mapping[str, np.ndarray]
    instruction: str | None = None
    tactile_image: np.ndarray | None = None  # (H, W, 3) uint8 or float32
    force_torque: np.ndarray | None = None  # (6,) float32
    proprio: np.ndarray | None = None  # (P,) float32
    session: str | None = None
    staged: Mapping[str, object] = field(default_factory=dict)


class ActPolicy(Protocol):
    """A policy served by ``act``.

    Optional, not part of this protocol: ``prepare(obs) -> Observation``, run by the server on the
    thread that parsed the request (the I/O thread, or a decode worker for JPEG/PNG), before the
    loop validates it. It may copy the frames towards the device (filling ``Observation.staged``)
    so that ``act`` does not; it must be thread-safe, must not run model work, and must leave the
    observation valid for ``act`` whether or not anything was staged. What it holds must be given
    back when the observation is dropped unanswered (cancelled, expired, refused): by garbage
    collection, since the server does not tell the policy. The server looks it up once, at load.
    """

    @property
    def info(self) -> ModelInfo: ...

    def describe(self) -> dict[str, Any]:
        """The model's ``hello`` entry: action spec, image size, cameras, tactile inputs."""
        ...

    def stats(self) -> dict[str, Any]:
        """The ``stats`` op's result: the action normalisation as the predecessor published it."""
        ...

    def validate(self, obs: Observation) -> None:
        """Raise :class:`InputError` when this observation cannot be served."""
        ...

    def batch_key(self, obs: Observation) -> Hashable:
        """Observations with equal keys can share one forward pass."""
        ...

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        """One forward for the batch -> (B, H, action_dim) float32 actions in physical units."""
        ...

    def reset(self, session: str | None) -> None:
        """Clear per-session state (a no-op for stateless policies)."""
        ...

    def warmup(self) -> None:
        """Run the shapes the server will see once, before health reports ok."""
        ...


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.0  # 0 -> argmax
    top_p: float = 1.0
    max_tokens: int = 256
    max_objects: int = 50


@dataclass(frozen=True)
class GenerationRequest:
    """One Moondream-style request. ``key`` is unique among the server's live requests."""

    key: int
    skill: str  # "caption" | "query" | "detect" | "point"
    image: np.ndarray  # (H, W, 3) uint8 RGB
    text: str | None = None  # the question (query) or the object (detect, point)
    length: str = "normal"  # caption length: "short" | "normal" | "long"
    stream: bool = False
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    prepared: Any = None  # what Generator.prepare() made of the image, off the loop thread


@dataclass(frozen=True)
class GenerationEvent:
    """Progress of one request: a streamed text chunk and/or its final result."""

    key: int
    chunk: str | None = None
    result: dict[str, Any] | None = None  # final: {"caption"|"answer": str, "finish_reason", "metrics"} ...

    @property
    def final(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class ReadyWork:
    """What a generator could run now: admission units pending, sequences a decode step advances."""

    admitting: int = 0  # requests with admission work left (one unit runs per admission_unit())
    decoding: int = 0  # sequences one decode_step() advances together

    @property
    def any(self) -> bool:
        return bool(self.admitting or self.decoding)


class Generator(Protocol):
    """A step-wise generative model with several KV-cache slots (continuous batching)."""

    @property
    def info(self) -> ModelInfo: ...

    def describe(self) -> dict[str, Any]: ...

    def skills(self) -> Sequence[str]:
        """The ops this generator serves, e.g. ("caption", "query", "detect", "point")."""
        ...

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """CPU-only preprocessing (e.g. image crops) run by the server's decode workers, in parallel
        with model work, so the loop thread never waits for it. Must be thread-safe and must not
        touch model state; returns the request with ``prepared`` set. Raises InputError."""
        ...

    def free_slots(self) -> int: ...

    def admit(self, request: GenerationRequest) -> None:
        """Take a free slot for this request; its admission work runs in later ``admission_unit()``
        calls. Raises :class:`InputError` for bad input, leaving no slot taken."""
        ...

    def ready(self) -> ReadyWork:
        """The work this generator has ready; cheap (no device work, no host sync)."""
        ...

    def admission_unit(self) -> list[GenerationEvent]:
        """One bounded admission unit (a chunk of crops, or a prefill) of the oldest admitting
        request; after its prefill the request decodes (and may already have a chunk/result)."""
        ...

    def decode_step(self) -> list[GenerationEvent]:
        """One decode step for all decoding sequences together (== launch + finish)."""
        ...

    def launch_decode_step(self) -> None:
        """Enqueue one decode step's device work for all decoding sequences without waiting for its
        result (GPU: kernels / graph replay on a normal-priority stream, the sampled tokens copied
        into pinned memory). At most one step is outstanding: a second launch raises RuntimeError.
        ``admit``/``cancel`` between launch and finish take effect at the next step (a cancelled
        sequence yields no event); the loop runs no admission unit while a step is in flight (an
        implementation may allow or refuse one). A model that cannot run asynchronously computes
        the step here (the old order)."""
        ...

    def finish_decode_step(self) -> list[GenerationEvent]:
        """Wait for the launched step and return the events ``decode_step()`` returns; without a
        launch, RuntimeError.

        Optional, not part of this protocol: ``decode_step_done() -> bool``, True once the launched
        step's device work has completed (GPU: ``event.query()``; no waiting). With it the loop waits
        on its inbox while the step runs, so an ``act`` arriving meanwhile starts at once instead of
        after the step, and it launches a step beside an act batch on the acts' turn — unless the
        step is already done right after its launch (a synchronous launch, e.g. on CPU). Without
        it the loop runs at most one act batch beside a step launched on generation's turn.
        The loop falls back to plain ``decode_step()`` for a generator without launch/finish."""
        ...

    def cancel(self, key: int) -> None:
        """Drop a request (cancelled, client gone, deadline passed, failure) and free its slot
        for the next unit. Unknown keys are ignored."""
        ...

    def warmup(self) -> None: ...
