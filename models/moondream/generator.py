"""Continuous batching over a multi-slot KV cache: the :class:`models.interfaces.Generator` for Moondream.

``admit`` reserves a free slot; the following ``admission_unit`` calls encode the image crops a
chunk at a time and then prefill BOS + image tokens + prompt; a ``decode_step`` feeds one input
for every decoding sequence in a single batched decoder forward over cache slots ``0..hi-1``
(``hi`` = highest active slot + 1; free slots in between run as masked dummy rows, which avoids
gathering the cache). Slots are handed out lowest-first so the active range stays dense. Which
unit runs when is the server's scheduling policy's decision (bridge/scheduling_policy.py), from
what ``ready()`` reports.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from models.interfaces import (
    GenerationEvent,
    GenerationRequest,
    GenerationSettings,
    InputError,
    ModelInfo,
    ReadyWork,
)
from models.memory_budget import MemoryBudget, check_fits, device_free_bytes
from models.moondream.crops import Tiling, crops_to_tensor, default_resize_backend, overlap_crops
from models.moondream.decode_step import (
    COL_KIND,
    COL_POSITION,
    COL_TEMPERATURE,
    COL_TOKEN,
    COL_TOP_P,
    COL_VALUE0,
    COL_VALUE1,
    INPUT_COORD,
    INPUT_SIZE,
    OUT_COORD,
    OUT_HEIGHT,
    OUT_TOKEN,
    OUT_WIDTH,
    DecodeOptions,
    DecodeStep,
)
from models.moondream.memory import moondream_budget
from models.moondream.model import MoondreamModel
from models.moondream.region import box_from_center
from models.moondream.sampling import sample_tokens
from models.moondream.sequence import (
    FEED_SIZE,
    FEED_X,
    FEED_Y,
    SKILLS,
    SequenceState,
    validate_request,
)
from models.moondream.text import KVCache
from models.moondream.tokenizer import WordChunker, encode, token_byte_table

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Admission:
    """A request between admit() and its prefill: crops encoded chunk by chunk."""

    seq: SequenceState
    crops: np.ndarray  # (N, crop, crop, 3) uint8: global crop then tiles
    tiling: Tiling
    prompt: list[int]
    features: list[torch.Tensor] = dataclasses.field(default_factory=list)  # (n, grid*grid, enc_dim) each
    encoded: int = 0


class MoondreamGenerator:
    """Serves caption / query / detect / point with ``max_sequences`` concurrent KV slots."""

    def __init__(
        self,
        model: MoondreamModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        max_sequences: int = 8,
        cache_context: int | None = None,
        seed: int = 0,
        encode_chunk_crops: int = 4,
        decode_options: DecodeOptions | None = None,
    ) -> None:
        if max_sequences < 1:
            raise ValueError("max_sequences must be >= 1")
        if encode_chunk_crops < 1:
            raise ValueError("encode_chunk_crops must be >= 1")
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self._info = info
        context = min(cache_context or self.config.text.max_context, self.config.text.max_context)
        if context <= self.config.prefix_attn_len + 1:
            raise ValueError(f"cache context {context} leaves no room after the image prefix")
        dtype_bytes = torch.empty((), dtype=model.dtype).element_size()
        self.memory = moondream_budget(
            self.config, model.parameter_count(), dtype_bytes, max_sequences, context, encode_chunk_crops
        )
        free = device_free_bytes(str(model.device))
        if free is not None:  # the weights are resident already: the cache and activations must fit
            need = MemoryBudget(0, self.memory.kv_cache_bytes, self.memory.largest_activation_bytes)
            check_fits(need, free, "moondream", "[vlm.options] max_sequences or context")
        self.cache = KVCache(self.config.text, max_sequences, context, model.device, model.dtype)
        self._token_bytes = token_byte_table(tokenizer, self.config.text.vocab_size)
        self._rng = torch.Generator(device=model.device).manual_seed(seed)
        self.decode = DecodeStep(model.text, model.region, self.cache, decode_options or DecodeOptions(), self._rng)
        self._by_slot: list[SequenceState | None] = [None] * max_sequences
        self._by_key: dict[int, SequenceState] = {}
        self._admitting: dict[int, _Admission] = {}  # FIFO: admitted, image not yet prefilled
        self.encode_chunk_crops = encode_chunk_crops
        self._eos = self.config.tokenizer.eos_id

    # ---- facts -------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self._info

    def skills(self) -> Sequence[str]:
        return SKILLS

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "skills": list(SKILLS),
            "max_sequences": self.cache.slots,
            "context": self.cache.context,
            "revision": self.config.revision,
            "image_resize": default_resize_backend(),  # pyvips (as the official code) or pillow
            "random_weights": self._info.random_weights,
            "parameters": self._info.parameters,
            "memory": self.memory.as_dict(),
            "decode": {
                "length_bucket": self.decode.options.length_bucket,
                "cuda_graphs": self.decode.options.cuda_graphs and self.model.device.type == "cuda",
            },
        }
        if self._info.random_weights:
            out["warning"] = "random weights: outputs are meaningless (tiny/test preset)"
        return out

    def free_slots(self) -> int:
        return sum(1 for s in self._by_slot if s is None)

    def active(self) -> int:
        """Requests holding a slot (admitting or decoding)."""
        return len(self._by_key)

    def ready(self) -> ReadyWork:
        return ReadyWork(admitting=len(self._admitting), decoding=len(self._by_key) - len(self._admitting))

    def cancel(self, key: int) -> None:
        self._admitting.pop(key, None)
        seq = self._by_key.pop(key, None)
        if seq is not None:
            self._by_slot[seq.slot] = None

    # ---- admission ---------------------------------------------------------------------------
    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        templates = self.config.tokenizer.templates
        if request.skill == "caption":
            return list(templates["caption"][request.length])
        parts = templates[request.skill]
        # the official code encodes " " + question / " " + object (a leading space) for every skill
        body = encode(self.tokenizer, " " + (request.text or ""))
        return list(parts["prefix"]) + body + list(parts["suffix"])

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Image crops (Pillow resizing, the slow CPU part of admission), made by the server's decode
        workers so the inference loop does not wait for them. Thread-safe: reads only the config."""
        validate_request(request, tuple(self.config.tokenizer.templates["caption"]))
        return dataclasses.replace(request, prepared=overlap_crops(request.image, self.model.vision.config))

    def admit(self, request: GenerationRequest) -> list[GenerationEvent]:
        """Validate, reserve a slot and queue the admission; the work runs in ``admission_unit()``.

        Admission (vision encode of the crops, then projection + prefill) is cut into units of
        at most ``encode_chunk_crops`` crops, one unit per ``admission_unit()`` call, so the
        server's loop can serve control requests between them. Returns no events (the list is
        kept for this model's own tests, which chain ``admit(...) + step()`` events).
        """
        started_s = time.perf_counter()
        if request.key in self._by_key:
            raise InputError(f"request key {request.key} is already active")
        validate_request(request, tuple(self.config.tokenizer.templates["caption"]))
        prompt = self.prompt_ids(request)
        input_tokens = self.config.prefix_attn_len + len(prompt)
        if input_tokens >= self.cache.context:
            raise InputError(f"prompt is {input_tokens} tokens; the context holds {self.cache.context}")
        slot = next((i for i, s in enumerate(self._by_slot) if s is None), None)
        if slot is None:
            raise RuntimeError("no free sequence slot: check free_slots() before admit()")
        prepared = request.prepared
        crops, tiling = prepared if prepared is not None else overlap_crops(request.image, self.config.vision)
        seq = SequenceState(
            request=request,
            slot=slot,
            pos=input_tokens,
            input_tokens=input_tokens,
            max_tokens=min(request.settings.max_tokens, self.cache.context - input_tokens),
            started_s=started_s,
        )
        self._by_slot[slot] = seq
        self._by_key[request.key] = seq
        self._admitting[request.key] = _Admission(seq, crops, tiling, prompt)
        return []

    @torch.inference_mode()
    def admission_unit(self) -> list[GenerationEvent]:
        """One admission unit for the oldest admitting request: a chunk of crops, or the prefill."""
        key, adm = next(iter(self._admitting.items()))
        vision, device = self.model.vision, self.model.device
        unit_started_s = time.perf_counter()
        if adm.encoded < len(adm.crops):
            chunk = adm.crops[adm.encoded : adm.encoded + self.encode_chunk_crops]
            x = crops_to_tensor(chunk, device=device, dtype=self.model.dtype)
            adm.features.append(vision.encode_crops(x))  # (n, grid*grid, enc_dim)
            adm.encoded += len(chunk)
            self._sync()
            adm.seq.prefill_ms += (time.perf_counter() - unit_started_s) * 1000.0
            return []
        del self._admitting[key]
        seq, text = adm.seq, self.model.text
        image_tokens = vision.project(torch.cat(adm.features), adm.tiling)  # (N, D)
        ids = torch.tensor([self.config.tokenizer.bos_id], device=device)
        prompt_t = torch.tensor(adm.prompt, dtype=torch.long, device=device)
        embeds = torch.cat([text.embed(ids), image_tokens, text.embed(prompt_t)], dim=0)[None]
        hidden_d = text.prefill(embeds, self.cache, seq.slot)[0, -1]
        logits_1v = text.logits(hidden_d[None])
        s = seq.request.settings
        if seq.is_text:
            temp = torch.tensor([float(s.temperature)], device=device)
            top_p = torch.tensor([float(s.top_p)], device=device)
            token = int(sample_tokens(logits_1v, temp, top_p, self._rng, all_greedy=s.temperature == 0)[0])
        else:
            token = int(logits_1v.argmax(dim=-1)[0])
        now_s = time.perf_counter()
        seq.prefill_ms += (now_s - unit_started_s) * 1000.0
        seq.ttft_ms = (now_s - seq.started_s) * 1000.0
        seq.decode_started_s = now_s
        events: list[GenerationEvent] = []
        if seq.is_text:
            seq.stream = WordChunker(self._token_bytes)
            self._after_text_token(seq, token, events)
        else:
            self._after_decision(seq, token, hidden_d, events)
        logger.debug("admitted key=%s skill=%s slot=%d tokens=%d", key, seq.request.skill, seq.slot,
                     seq.input_tokens)
        return events

    def _sync(self) -> None:
        if self.model.device.type == "cuda":  # so that prefill_ms times the work, not its launch
            torch.cuda.synchronize(self.model.device)

    # ---- decoding ----------------------------------------------------------------------------
    def step(self) -> list[GenerationEvent]:
        """Drive the generator alone (tests, scripts): an admission unit when one is pending, else a
        decode step. The server does not use this: its scheduling policy picks the unit."""
        return self.admission_unit() if self._admitting else self.decode_step()

    @torch.inference_mode()
    def decode_step(self) -> list[GenerationEvent]:
        decoding = [seq for key, seq in self._by_key.items() if key not in self._admitting]
        if not decoding:
            return []
        return self._decode_step(decoding)

    def _decode_step(self, decoding: list[SequenceState]) -> list[GenerationEvent]:
        """One static-shape step (:mod:`models.moondream.decode_step`) for every decoding row."""
        step = self.decode
        step.clear_rows()
        ints, floats = step.int_rows, step.float_rows
        region_rows = sample = False
        for seq in decoding:
            r = seq.slot
            ints[r, COL_POSITION] = seq.pos
            if seq.is_text:
                ints[r, COL_TOKEN] = seq.next_token
                temperature = float(seq.request.settings.temperature)
                floats[r, COL_TEMPERATURE] = temperature
                floats[r, COL_TOP_P] = float(seq.request.settings.top_p)
                sample = sample or temperature > 0
                continue
            region_rows = True
            if seq.feed == FEED_SIZE:
                ints[r, COL_KIND] = INPUT_SIZE
                floats[r, COL_VALUE0], floats[r, COL_VALUE1] = seq.feed_value
            else:
                ints[r, COL_KIND] = INPUT_COORD
                floats[r, COL_VALUE0] = seq.feed_value[0]
        out = step.run(max(seq.pos for seq in decoding), region_rows, sample)

        events: list[GenerationEvent] = []
        for seq in decoding:
            r = seq.slot
            seq.pos += 1
            token = int(out[r, OUT_TOKEN])
            if seq.is_text:
                self._after_text_token(seq, token, events)
            elif seq.feed == FEED_X:
                self._feed_next(seq, FEED_Y, (float(out[r, OUT_COORD]),), events)
            elif seq.feed == FEED_Y and seq.is_detect:
                width, height = float(out[r, OUT_WIDTH]), float(out[r, OUT_HEIGHT])
                seq.objects.append(box_from_center(seq.center[0], seq.feed_value[0], width, height))
                self._feed_next(seq, FEED_SIZE, (width, height), events)
            else:  # the last input of an object: its output decides EOS or the next object's x
                if seq.feed == FEED_Y:  # point: the object is complete
                    seq.objects.append({"x": seq.center[0], "y": seq.feed_value[0]})
                self._after_decision(seq, token, None, events, next_x=float(out[r, OUT_COORD]))
        return events

    # ---- state transitions -------------------------------------------------------------------
    def _after_text_token(self, seq: SequenceState, token: int, events: list[GenerationEvent]) -> None:
        assert seq.stream is not None
        if token == self._eos:
            self._finish_text(seq, "stop", events)
            return
        seq.output_tokens += 1
        chunk = seq.stream.push(token)
        if chunk and seq.request.stream:
            events.append(GenerationEvent(key=seq.request.key, chunk=chunk))
        if seq.output_tokens >= seq.max_tokens:
            self._finish_text(seq, "length", events)
        else:
            seq.next_token = token

    def _finish_text(self, seq: SequenceState, reason: str, events: list[GenerationEvent]) -> None:
        assert seq.stream is not None
        tail = seq.stream.finish()
        if tail and seq.request.stream:
            events.append(GenerationEvent(key=seq.request.key, chunk=tail))
        field = "caption" if seq.request.skill == "caption" else "answer"
        result = {
            field: seq.stream.text,
            "finish_reason": reason,
            "metrics": seq.metrics(time.perf_counter()),
        }
        self._release(seq)
        events.append(GenerationEvent(key=seq.request.key, result=result))

    def _after_decision(
        self,
        seq: SequenceState,
        token: int,
        hidden_d: torch.Tensor | None,
        events: list[GenerationEvent],
        next_x: float | None = None,
    ) -> None:
        """After the model chose between another object and EOS."""
        if token == self._eos or len(seq.objects) >= seq.request.settings.max_objects:
            self._finish_region(seq, events)
            return
        if next_x is None:
            assert hidden_d is not None
            next_x = float(self.model.region.decode_coord(hidden_d[None])[0])
        self._feed_next(seq, FEED_X, (next_x,), events)

    def _feed_next(
        self, seq: SequenceState, feed: str, value: tuple[float, ...], events: list[GenerationEvent]
    ) -> None:
        if feed == FEED_Y:
            seq.center = (seq.feed_value[0], 0.0)
        seq.feed, seq.feed_value = feed, value
        if seq.pos >= self.cache.context:  # no room for the next input: return the objects so far
            self._finish_region(seq, events)

    def _finish_region(self, seq: SequenceState, events: list[GenerationEvent]) -> None:
        name = "objects" if seq.is_detect else "points"
        self._release(seq)
        events.append(GenerationEvent(key=seq.request.key, result={name: list(seq.objects)}))

    def _release(self, seq: SequenceState) -> None:
        self._by_key.pop(seq.request.key, None)
        self._by_slot[seq.slot] = None

    def warmup(self) -> None:
        """Admit and finish one tiny request per skill, so first real requests pay no lazy init; on
        CUDA then capture every decode shape (all rows inactive), so no capture happens while serving."""
        image = np.zeros((self.config.vision.crop_size, self.config.vision.crop_size, 3), dtype=np.uint8)
        settings = GenerationSettings(max_tokens=2, max_objects=1)
        for key, skill in enumerate(SKILLS, start=-len(SKILLS)):
            request = GenerationRequest(key=key, skill=skill, image=image, text="thing", settings=settings)
            self.admit(request)
            for _ in range(64):
                if key not in self._by_key:
                    break
                self.step()
            self.cancel(key)
        if self.model.device.type == "cuda":
            with torch.inference_mode():
                shapes = self.decode.warmup(self.config.prefix_attn_len)
            logger.info("moondream decode warm-up: %d shapes, %d CUDA graphs", shapes, self.decode.graphs_captured)
