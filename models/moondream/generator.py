"""Continuous batching over a multi-slot KV cache: the :class:`models.interfaces.Generator` for Moondream.

``admit`` reserves a free slot; the following ``step`` calls encode the image crops a chunk at a
time and then prefill BOS + image tokens + prompt (admission units, alternating with decode
steps); a decode ``step`` feeds one input for every decoding sequence in a single batched
decoder forward over cache slots ``0..hi-1`` (``hi`` = highest active slot + 1; free slots in
between run as masked dummy rows, which avoids gathering the cache). Slots are handed out
lowest-first so the active range stays dense.
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

from models.interfaces import GenerationEvent, GenerationRequest, GenerationSettings, InputError, ModelInfo
from models.moondream.crops import Tiling, crops_to_tensor, overlap_crops
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
        self.cache = KVCache(self.config.text, max_sequences, context, model.device, model.dtype)
        self._token_bytes = token_byte_table(tokenizer, self.config.text.vocab_size)
        self._rng = torch.Generator(device=model.device).manual_seed(seed)
        self._by_slot: list[SequenceState | None] = [None] * max_sequences
        self._by_key: dict[int, SequenceState] = {}
        self._admitting: dict[int, _Admission] = {}  # FIFO: admitted, image not yet prefilled
        self._last_unit_was_admission = False
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
            "random_weights": self._info.random_weights,
            "parameters": self._info.parameters,
        }
        if self._info.random_weights:
            out["warning"] = "random weights: outputs are meaningless (tiny/test preset)"
        return out

    def free_slots(self) -> int:
        return sum(1 for s in self._by_slot if s is None)

    def active(self) -> int:
        return len(self._by_key)

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
        text = request.text or ""
        body = encode(self.tokenizer, text if request.skill == "query" else " " + text)
        return list(parts["prefix"]) + body + list(parts["suffix"])

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Image crops (Pillow resizing, the slow CPU part of admission), made by the server's decode
        workers so the inference loop does not wait for them. Thread-safe: reads only the config."""
        validate_request(request, tuple(self.config.tokenizer.templates["caption"]))
        return dataclasses.replace(request, prepared=overlap_crops(request.image, self.model.vision.config))

    def admit(self, request: GenerationRequest) -> list[GenerationEvent]:
        """Validate, reserve a slot and queue the admission; the work itself runs in ``step()``.

        Admission (vision encode of the crops, then projection + prefill) is cut into units of
        at most ``encode_chunk_crops`` crops, one unit per ``step()`` call, so the server's loop
        can serve control requests between them. Always returns no events.
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

    def _advance_admission(self) -> list[GenerationEvent]:
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
    @torch.inference_mode()
    def step(self) -> list[GenerationEvent]:
        """One unit of work: an admission unit or a decode step for all decoding sequences.

        While requests are being admitted and others decode, the two alternate, so neither new
        requests nor running ones wait for the other to finish.
        """
        decoding = [seq for key, seq in self._by_key.items() if key not in self._admitting]
        if self._admitting and (not decoding or not self._last_unit_was_admission):
            self._last_unit_was_admission = True
            return self._advance_admission()
        self._last_unit_was_admission = False
        if not decoding:
            return []
        return self._decode_step(decoding)

    def _decode_step(self, decoding: list[SequenceState]) -> list[GenerationEvent]:
        rows = max(seq.slot for seq in decoding) + 1
        device = self.model.device
        token_ids = [0] * rows
        positions = [0] * rows
        coord_rows: list[int] = []
        coord_values: list[float] = []
        size_rows: list[int] = []
        size_values: list[tuple[float, ...]] = []
        logit_rows: list[int] = []  # rows whose output picks a token
        temps: list[float] = []
        top_ps: list[float] = []
        coord_out_rows: list[int] = []  # rows whose output is decoded as a coordinate
        size_out_rows: list[int] = []  # rows whose output is decoded as a size
        for seq in decoding:
            r = seq.slot
            positions[r] = seq.pos
            if seq.is_text:
                token_ids[r] = seq.next_token
                logit_rows.append(r)
                temps.append(float(seq.request.settings.temperature))
                top_ps.append(float(seq.request.settings.top_p))
                continue
            if seq.feed == FEED_SIZE:
                size_rows.append(r)
                size_values.append(seq.feed_value)
            else:
                coord_rows.append(r)
                coord_values.append(seq.feed_value[0])
            if seq.feed == FEED_X:
                coord_out_rows.append(r)
            elif seq.feed == FEED_Y and seq.is_detect:
                size_out_rows.append(r)
            else:  # last input of an object: decide the next token, and prepare the next x
                logit_rows.append(r)
                temps.append(0.0)
                top_ps.append(1.0)
                coord_out_rows.append(r)

        text, region = self.model.text, self.model.region
        embeds = text.embed(torch.tensor(token_ids, device=device))  # (rows, D)
        if coord_rows:
            values = torch.tensor(coord_values, device=device, dtype=torch.float32)
            embeds[torch.tensor(coord_rows, device=device)] = region.encode_coord(values).to(embeds.dtype)
        if size_rows:
            values = torch.tensor(size_values, device=device, dtype=torch.float32)
            embeds[torch.tensor(size_rows, device=device)] = region.encode_size(values).to(embeds.dtype)
        positions_t = torch.tensor(positions, device=device)
        hidden = text.decode(embeds[:, None], self.cache, positions_t, max(positions) + 1)[:, 0]  # (rows, D)

        tokens: dict[int, int] = {}
        if logit_rows:
            logits = text.logits(hidden[torch.tensor(logit_rows, device=device)])
            picked = sample_tokens(
                logits,
                torch.tensor(temps, device=device),
                torch.tensor(top_ps, device=device),
                self._rng,
                all_greedy=not any(temps),
            ).tolist()
            tokens = dict(zip(logit_rows, picked, strict=True))
        coords: dict[int, float] = {}
        if coord_out_rows:
            decoded = region.decode_coord(hidden[torch.tensor(coord_out_rows, device=device)]).tolist()
            coords = dict(zip(coord_out_rows, decoded, strict=True))
        sizes: dict[int, tuple[float, float]] = {}
        if size_out_rows:
            decoded_wh = region.decode_size(hidden[torch.tensor(size_out_rows, device=device)]).tolist()
            sizes = {r: (wh[0], wh[1]) for r, wh in zip(size_out_rows, decoded_wh, strict=True)}

        events: list[GenerationEvent] = []
        for seq in decoding:
            r = seq.slot
            seq.pos += 1
            if seq.is_text:
                self._after_text_token(seq, tokens[r], events)
            elif seq.feed == FEED_X:
                self._feed_next(seq, FEED_Y, (coords[r],), events)
            elif seq.feed == FEED_Y and seq.is_detect:
                width, height = sizes[r]
                seq.objects.append(box_from_center(seq.center[0], seq.feed_value[0], width, height))
                self._feed_next(seq, FEED_SIZE, (width, height), events)
            else:
                if seq.feed == FEED_Y:  # point: the object is complete
                    seq.objects.append({"x": seq.center[0], "y": seq.feed_value[0]})
                self._after_decision(seq, tokens[r], None, events, next_x=coords[r])
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
        """Admit and finish one tiny request per skill, so first real requests pay no lazy init."""
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
