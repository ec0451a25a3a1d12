"""Test doubles for the models behind the server (tests only, never the product).

They stand in where the real model's cost or randomness would hide what a test checks: the
transport, the batching and the scheduling. Tests of the real models live in tests/models/.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from models.interfaces import (
    GenerationEvent,
    GenerationRequest,
    InputError,
    ModelInfo,
    Observation,
    ReadyWork,
)

CHUNK = 4


class EchoPolicy:
    """Actions derived from the inputs, so a test can tell that its own request was answered.

    action[0] = mean pixel / 255, action[1] = len(instruction), action[2] = force_torque[0] (or -1),
    action[3] = proprio[0] (or -1), action[6] = batch size of the forward; actions[h] = action + h.
    """

    def __init__(self, delay_s: float = 0.0, per_item_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.per_item_s = per_item_s
        self.batches: list[int] = []
        self.resets: list[str | None] = []

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("echo", "test-double", "cpu", "float32", True, 0, "tests")

    def describe(self) -> dict[str, Any]:
        return {"action": {"dim": 7, "chunk_size": CHUNK}, "cameras": ["primary", "wrist"], "image_size": [8, 8]}

    def stats(self) -> dict[str, Any]:
        return {"mean": [0.0] * 7, "std": [1.0] * 7, "description": {"0-2": "t", "3-5": "r", "6": "g"}}

    def validate(self, obs: Observation) -> None:
        if obs.instruction == "invalid":
            raise InputError("instruction 'invalid' is refused by the test policy")

    def batch_key(self, obs: Observation) -> Hashable:
        return tuple((k, v.shape) for k, v in sorted(obs.images.items()))

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        self.batches.append(len(batch))
        if self.delay_s or self.per_item_s:
            time.sleep(self.delay_s + self.per_item_s * len(batch))
        out = np.zeros((len(batch), CHUNK, 7), np.float32)
        for i, obs in enumerate(batch):
            first = next(iter(obs.images.values()))
            out[i, :, 0] = float(first.mean()) / 255.0
            out[i, :, 1] = len(obs.instruction or "")
            out[i, :, 2] = obs.force_torque[0] if obs.force_torque is not None else -1.0
            out[i, :, 3] = obs.proprio[0] if obs.proprio is not None else -1.0
            out[i, :, 6] = len(batch)
            out[i] += np.arange(CHUNK, dtype=np.float32)[:, None]
        return out

    def reset(self, session: str | None) -> None:
        self.resets.append(session)

    def warmup(self) -> None:
        pass


class WordGenerator:
    """A step-wise generator: emits the words of a fixed text, one word per step per sequence."""

    def __init__(self, slots: int = 4, step_s: float = 0.0, words: int = 5) -> None:
        self.slots = slots
        self.step_s = step_s
        self.words = words
        self._active: dict[int, tuple[GenerationRequest, int]] = {}
        self.steps = 0
        self.max_active = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("words", "test-double", "cpu", "float32", True, 0, "tests")

    def describe(self) -> dict[str, Any]:
        return {"skills": list(self.skills())}

    def skills(self) -> Sequence[str]:
        return ("caption", "query", "detect", "point")

    def free_slots(self) -> int:
        return self.slots - len(self._active)

    def ready(self) -> ReadyWork:
        return ReadyWork(admitting=0, decoding=len(self._active))

    def admission_unit(self) -> list[GenerationEvent]:
        return []

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        if request.text == "refuse early":
            raise InputError("the test generator refuses 'refuse early' while preparing")
        return request

    def admit(self, request: GenerationRequest) -> None:
        if request.text == "refuse":
            raise InputError("the test generator refuses 'refuse'")
        if self.free_slots() <= 0:
            raise RuntimeError("admit without a free slot")
        self._active[request.key] = (request, 0)
        self.max_active = max(self.max_active, len(self._active))

    def decode_step(self) -> list[GenerationEvent]:
        self.steps += 1
        if self.step_s:
            time.sleep(self.step_s)
        events = []
        limit = self.words
        for key, (req, n) in list(self._active.items()):
            n += 1
            done = n >= min(limit, req.settings.max_tokens)
            chunk = f"w{n} "
            if done:
                del self._active[key]
                text = "".join(f"w{i} " for i in range(1, n + 1))
                result: dict[str, Any]
                if req.skill == "detect":
                    result = {"objects": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]}
                elif req.skill == "point":
                    result = {"points": [{"x": 0.5, "y": 0.25}]}
                else:
                    key_name = "caption" if req.skill == "caption" else "answer"
                    result = {
                        key_name: text,
                        "finish_reason": "stop" if n == limit else "length",
                        "metrics": {"output_tokens": n},
                    }
                events.append(GenerationEvent(key, chunk=chunk, result=result))
            else:
                self._active[key] = (req, n)
                events.append(GenerationEvent(key, chunk=chunk))
        return events

    def cancel(self, key: int) -> None:
        self._active.pop(key, None)

    def warmup(self) -> None:
        pass
