"""``[vlm] kind = "simulated"``: Moondream 2's admission units and decode steps timed on a simulated device.

Same unit structure as the real generator (models/moondream/generator.py): ``admit`` takes a
slot; ``admission_unit`` encodes ``encode_chunk_crops`` crops or runs the prefill (which picks
the first token); ``decode_step`` advances every decoding sequence by one input. Each unit waits
for the cost model's time. A decode step can be split like the GPU path's: ``launch_decode_step``
puts it in flight on the simulated device's normal-priority stream and returns at once; an
``act`` of the simulated policy run meanwhile overlaps it (models/simulated/streams.py: the
shared-roofline rule), and ``finish_decode_step`` waits for its (possibly stretched) end.
Outputs are well-formed and meaningless: captions/answers are ``tok1 tok2 ...`` of the preset's
typical length, detect/point return fixed boxes/points.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from models.interfaces import (
    GenerationEvent,
    GenerationRequest,
    InputError,
    ModelInfo,
    ReadyWork,
)
from models.moondream.config import REAL_PRESET, MoondreamConfig, preset_config
from models.moondream.crops import tiling_for
from models.moondream.sequence import SKILLS, validate_request
from models.simulated import costs
from models.simulated.device import DeviceWork, wait_ms
from models.simulated.presets import GENERATOR_PRESETS, describe_preset, generator_workload, load_preset
from models.simulated.streams import DeviceStreams, streams_for
from vtla_contracts.model_spec import ModelSpec

logger = logging.getLogger(__name__)

_STEPS_PER_OBJECT = {"detect": 4, "point": 3}  # x, y, [size,] next-object decision


@dataclasses.dataclass
class _Sequence:
    request: GenerationRequest
    crops_left: int
    input_tokens: int
    prefilled: int
    target: int  # text: tokens to emit; region: decode steps to run
    started_s: float
    pos: int = 0  # context positions written
    emitted: int = 0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    decode_started_s: float = 0.0
    chunks: list[str] = dataclasses.field(default_factory=list)


class SimulatedGenerator:
    """Implements :class:`models.interfaces.Generator` with the cost model instead of a model."""

    def __init__(self, spec: ModelSpec) -> None:
        self.preset = load_preset(spec.preset, GENERATOR_PRESETS, spec.options)
        self.workload = generator_workload(self.preset)
        imitates = self.preset.imitates
        self.cfg: MoondreamConfig = preset_config(REAL_PRESET if imitates == REAL_PRESET else imitates)
        self._slots: list[int | None] = [None] * self.workload.max_sequences
        self._seqs: dict[int, _Sequence] = {}
        self._admitting: dict[int, _Sequence] = {}  # FIFO
        self._info = ModelInfo(
            name="moondream",
            kind="simulated",
            device=f"simulated {self.preset.device.name}",
            dtype="bfloat16",
            random_weights=True,
            parameters=int(costs.moondream_vision_parameters(self.cfg) + costs.moondream_text_parameters(self.cfg)),
            source=self.preset.name,
        )
        self.units = {"admission": 0, "decode": 0}  # counters a test or benchmark may read
        self._launched: list[_Sequence] | None = None  # the sequences of the decode step in flight

    # ---- facts -------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self._info

    def skills(self) -> Sequence[str]:
        return SKILLS

    def describe(self) -> dict[str, Any]:
        return {
            "skills": list(SKILLS),
            "max_sequences": len(self._slots),
            "context": self.cfg.text.max_context,
            "revision": self.cfg.revision,
            "random_weights": True,
            "parameters": self._info.parameters,
            "simulated": True,
            "simulation": describe_preset(self.preset),
            "warning": "simulated: no model runs; outputs are placeholders, timing imitates the named device",
        }

    # ---- the cost model (no waiting) ---------------------------------------------------------
    def crops_ms(self, crops: int) -> float:
        c = self.preset.costs
        return self.preset.device.phase_ms(
            costs.encode_crops(self.cfg, crops, c.activation_rw_per_layer, c.kernels)
        )

    def prefill_ms(self, tokens: int, context: int | None = None) -> float:
        c = self.preset.costs
        return self.preset.device.phase_ms(
            costs.prefill(self.cfg, tokens, c.activation_rw_per_layer, c.kernels, context)
        )

    def decode_work(self, contexts: Sequence[int]) -> DeviceWork:
        c = self.preset.costs
        return costs.decode_step(self.cfg, contexts, c.activation_rw_per_layer, c.kernels)

    def decode_ms(self, contexts: Sequence[int]) -> float:
        return self.preset.device.phase_ms(self.decode_work(contexts))

    def _streams(self) -> DeviceStreams:
        return streams_for(self.preset.device)

    # ---- admission ---------------------------------------------------------------------------
    def free_slots(self) -> int:
        return self._slots.count(None)

    def ready(self) -> ReadyWork:
        return ReadyWork(admitting=len(self._admitting), decoding=len(self._seqs) - len(self._admitting))

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        validate_request(request, tuple(self.cfg.tokenizer.templates["caption"]))
        height, width = request.image.shape[:2]
        return dataclasses.replace(request, prepared=1 + tiling_for(height, width, self.cfg.vision).n_tiles)

    def _target(self, request: GenerationRequest) -> int:
        w = self.workload
        if request.skill in _STEPS_PER_OBJECT:
            objects = min(w.objects, request.settings.max_objects)
            return objects * _STEPS_PER_OBJECT[request.skill] + 1  # + the final "no more objects" decision
        if request.skill == "caption":
            typical = {"short": w.caption_short_tokens, "normal": w.caption_normal_tokens}.get(
                request.length, w.caption_long_tokens
            )
        else:
            typical = w.answer_tokens
        return max(1, typical)

    def admit(self, request: GenerationRequest) -> None:
        if request.key in self._seqs:
            raise InputError(f"request key {request.key} is already active")
        prepared = request.prepared if request.prepared is not None else self.prepare(request).prepared
        slot = next((i for i, key in enumerate(self._slots) if key is None), None)
        if slot is None:
            raise RuntimeError("no free sequence slot: check free_slots() before admit()")
        prompt = len(self.cfg.tokenizer.templates["caption"]["normal"]) + self.workload.prompt_tokens
        seq = _Sequence(request, int(prepared), self.cfg.prefix_attn_len + prompt, 0, self._target(request),
                        time.perf_counter())
        self._slots[slot] = request.key
        self._seqs[request.key] = seq
        self._admitting[request.key] = seq

    def admission_unit(self) -> list[GenerationEvent]:
        if self._launched is not None:
            raise RuntimeError("admission_unit while a decode step is in flight: finish_decode_step() first")
        if not self._admitting:
            return []
        key, seq = next(iter(self._admitting.items()))
        self.units["admission"] += 1
        if seq.crops_left > 0:
            n = min(self.workload.encode_chunk_crops, seq.crops_left)
            seq.prefill_ms += wait_ms(self.crops_ms(n))
            seq.crops_left -= n
            return []
        chunk = self.workload.prefill_chunk_tokens or seq.input_tokens
        tokens = min(chunk, seq.input_tokens - seq.prefilled)
        seq.prefilled += tokens
        context = None if tokens == seq.input_tokens else seq.prefilled
        seq.prefill_ms += wait_ms(self.prefill_ms(tokens, context))
        if seq.prefilled < seq.input_tokens:
            return []
        del self._admitting[key]
        now_s = time.perf_counter()
        seq.pos, seq.ttft_ms, seq.decode_started_s = seq.input_tokens, (now_s - seq.started_s) * 1e3, now_s
        events: list[GenerationEvent] = []
        self._advance(seq, events)  # the prefill picks the first token
        return events

    # ---- decoding ----------------------------------------------------------------------------
    def decode_step(self) -> list[GenerationEvent]:
        self.launch_decode_step()
        return self.finish_decode_step()

    def launch_decode_step(self) -> None:
        """Put one decode step of every decoding sequence in flight; returns without waiting."""
        if self._launched is not None:
            raise RuntimeError("a decode step is already in flight: finish_decode_step() first")
        decoding = [seq for key, seq in self._seqs.items() if key not in self._admitting]
        self._launched = decoding
        if decoding:
            self.units["decode"] += 1
            self._streams().launch(self.preset.device.phase_times(self.decode_work([s.pos for s in decoding])))

    def decode_step_done(self) -> bool:
        """True when the step in flight has finished on the simulated device (no waiting)."""
        return self._launched is None or not self._launched or self._streams().done()

    def finish_decode_step(self) -> list[GenerationEvent]:
        """Wait for the step in flight -> its events; sequences cancelled meanwhile are skipped."""
        decoding = self._launched
        if decoding is None:
            raise RuntimeError("finish_decode_step() without launch_decode_step()")
        self._launched = None
        if not decoding:
            return []
        self._streams().finish()
        events: list[GenerationEvent] = []
        for seq in decoding:
            if self._seqs.get(seq.request.key) is not seq:  # cancelled (or its key reused) after launch
                continue
            seq.pos += 1
            self._advance(seq, events)
        return events

    def _advance(self, seq: _Sequence, events: list[GenerationEvent]) -> None:
        request = seq.request
        seq.emitted += 1
        if request.skill in _STEPS_PER_OBJECT:
            if seq.emitted >= seq.target:
                self._finish(seq, self._region_result(request), events)
            return
        chunk = f"tok{seq.emitted} "
        seq.chunks.append(chunk)
        limit = min(request.settings.max_tokens, self.cfg.text.max_context - seq.input_tokens)
        done = seq.emitted >= min(seq.target, limit)
        if done:
            field = "caption" if request.skill == "caption" else "answer"
            result = {
                field: "".join(seq.chunks),
                "finish_reason": "stop" if seq.emitted >= seq.target else "length",
                "metrics": self._metrics(seq),
            }
            self._finish(seq, result, events, chunk if request.stream else None)
        elif request.stream:
            events.append(GenerationEvent(key=request.key, chunk=chunk))

    def _region_result(self, request: GenerationRequest) -> dict[str, Any]:
        n = min(self.workload.objects, request.settings.max_objects)
        if request.skill == "detect":
            boxes = [{"x_min": 0.1 * i, "y_min": 0.1 * i, "x_max": 0.1 * i + 0.2, "y_max": 0.1 * i + 0.3}
                     for i in range(1, n + 1)]
            return {"objects": boxes}
        return {"points": [{"x": 0.1 * i + 0.1, "y": 0.1 * i + 0.2} for i in range(1, n + 1)]}

    def _metrics(self, seq: _Sequence) -> dict[str, Any]:
        return {
            "input_tokens": seq.input_tokens,
            "output_tokens": seq.emitted,
            "prefill_ms": round(seq.prefill_ms, 3),
            "decode_ms": round((time.perf_counter() - seq.decode_started_s) * 1e3, 3),
            "ttft_ms": round(seq.ttft_ms, 3),
        }

    def _finish(self, seq: _Sequence, result: dict[str, Any], events: list[GenerationEvent],
                chunk: str | None = None) -> None:
        self.cancel(seq.request.key)
        events.append(GenerationEvent(key=seq.request.key, chunk=chunk, result=result))

    def cancel(self, key: int) -> None:
        self._admitting.pop(key, None)
        if self._seqs.pop(key, None) is not None:
            self._slots[self._slots.index(key)] = None

    def warmup(self) -> None:
        return None


def load_generator(spec: ModelSpec, device: str, dtype: str) -> SimulatedGenerator:
    """Registry factory; ``device``/``dtype`` are ignored: the simulated device is the preset's."""
    generator = SimulatedGenerator(spec)
    logger.warning(
        "SIMULATED generator %s (imitates %s on %s): no model runs, outputs are placeholders",
        spec.preset, generator.preset.imitates, generator.preset.device.name,
    )
    return generator


__all__ = ["SimulatedGenerator", "load_generator"]
