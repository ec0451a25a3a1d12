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

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from models.cuda_streams import model_stream, on_stream
from models.interfaces import (
    GenerationEvent,
    GenerationRequest,
    GenerationSettings,
    InputError,
    ModelInfo,
    ReadyWork,
)
from models.memory_budget import MemoryBudget, check_fits, device_free_bytes
from models.moondream.admission_plan import AdmissionOptions, PendingAdmission, encode_pieces, prefill_group
from models.moondream.crops import (
    CROP_RESIZE_DEVICE,
    RESIZE_DEVICE,
    Tiling,
    crops_to_tensor,
    default_resize_backend,
    overlap_crops,
    overlap_crops_on_device,
    upload_image,
)
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
class _LaunchedStep:
    """A decode step launched and not yet finished: the rows it ran, and what each fed."""

    rows: list[SequenceState]


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
        admission_options: AdmissionOptions | None = None,
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
        self.admission = admission_options or AdmissionOptions()
        self.prefill_tokens = max(context, self.admission.prefill_tokens or context)
        self.memory = moondream_budget(
            self.config, model.parameter_count(), dtype_bytes, max_sequences, context, encode_chunk_crops,
            self.prefill_tokens,
        )
        free = device_free_bytes(str(model.device))
        if free is not None:  # the weights are resident already: the cache and activations must fit
            need = MemoryBudget(0, self.memory.kv_cache_bytes, self.memory.largest_activation_bytes)
            check_fits(need, free, "moondream", "[vlm.options] max_sequences or context")
        self.cache = KVCache(self.config.text, max_sequences, context, model.device, model.dtype)
        self._token_bytes = token_byte_table(tokenizer, self.config.text.vocab_size)
        self._rng = torch.Generator(device=model.device).manual_seed(seed)
        # generation (admission and decode steps) runs on its own normal-priority stream on CUDA,
        # so the VTLA's high-priority ``act`` stream is not queued behind it
        self._stream = model_stream(model.device)
        with self._on_stream():
            self.decode = DecodeStep(
                model.text, model.region, self.cache, decode_options or DecodeOptions(), self._rng
            )
        self._launched: _LaunchedStep | None = None
        self.vision_forwards = 0  # counters: vision encoder forwards and prefill forwards run
        self.prefill_forwards = 0
        self._by_slot: list[SequenceState | None] = [None] * max_sequences
        self._by_key: dict[int, SequenceState] = {}
        self._admitting: dict[int, PendingAdmission] = {}  # FIFO: admitted, image not yet prefilled
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
            "image_resize": self.resize_path,  # pyvips (as the official code), pillow or device-bicubic
            "admission": {
                "batch": self.admission.batch,
                "encode_chunk_crops": self.encode_chunk_crops,
                "prefill_batch": self.admission.prefill_batch if self.admission.batch else 1,
            },
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

    @property
    def resize_path(self) -> str:
        """Which resize makes the crops: ``pyvips`` / ``pillow`` on the host, or ``device-bicubic``."""
        return RESIZE_DEVICE if self.admission.crop_resize == CROP_RESIZE_DEVICE else default_resize_backend()

    def _on_stream(self) -> contextlib.AbstractContextManager[None]:
        """Device work of generation on the generation stream (CUDA); nothing on CPU."""
        return on_stream(self._stream)

    def free_slots(self) -> int:
        return sum(1 for s in self._by_slot if s is None)

    def active(self) -> int:
        """Requests holding a slot (admitting or decoding)."""
        return len(self._by_key)

    def ready(self) -> ReadyWork:
        return ReadyWork(admitting=len(self._admitting), decoding=len(self._by_key) - len(self._admitting))

    def cancel(self, key: int) -> None:
        """Forget a request. Between :meth:`launch_decode_step` and :meth:`finish_decode_step` this is
        safe: the launched step's row for it is discarded by the finish, and its slot is reused only by
        an admission whose prefill is queued after the step (same stream) and overwrites the slot."""
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
        if self.admission.crop_resize == CROP_RESIZE_DEVICE:
            return request  # the crops are resized on the device at admit()
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
        crops, tiling = self._crops(request)
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
        self._admitting[request.key] = PendingAdmission(seq, crops, tiling, prompt)
        return []

    def _crops(self, request: GenerationRequest) -> tuple[np.ndarray | torch.Tensor, Tiling]:
        """The request's crops: made by ``prepare()`` (host resize), or now, on the device."""
        if request.prepared is not None:
            crops, tiling = request.prepared
            return crops, tiling
        if self.admission.crop_resize == CROP_RESIZE_DEVICE:
            with torch.inference_mode(), self._on_stream():
                image = upload_image(request.image, self.model.device)  # once, as uint8
                return overlap_crops_on_device(image, self.config.vision)
        return overlap_crops(request.image, self.config.vision)

    @torch.inference_mode()
    def admission_unit(self) -> list[GenerationEvent]:
        """One admission unit: a vision forward over the next crops waiting, or a prefill.

        While the oldest admitting request has crops left, a unit encodes up to
        ``encode_chunk_crops`` crops taken in admission order (with batching on, from several
        requests when the oldest has fewer left). Once the oldest is encoded, a unit prefills it
        together with up to ``prefill_batch - 1`` more fully encoded requests whose lengths round
        up to the same ``prefill_length_bucket`` (right-padded; see ``TextModel.prefill``).
        Safe while a decode step is launched: the work is queued after it on the same stream.
        """
        with self._on_stream():
            oldest = next(iter(self._admitting.values()))
            if oldest.remaining_crops > 0:
                self._encode_unit()
                return []
            return self._prefill_unit()

    def _encode_unit(self) -> None:
        started_s = time.perf_counter()
        pieces = encode_pieces(self._admitting.values(), self.encode_chunk_crops, self.admission.batch)
        device, dtype = self.model.device, self.model.dtype
        x = torch.cat(
            [crops_to_tensor(adm.crops[adm.encoded : adm.encoded + n], device, dtype) for adm, n in pieces]
        )
        features = self.model.vision.encode_crops(x)  # (n, grid*grid, enc_dim)
        self.vision_forwards += 1
        offset = 0
        for adm, n in pieces:
            adm.features.append(features[offset : offset + n])
            adm.encoded += n
            offset += n
        self._sync()
        elapsed_ms = (time.perf_counter() - started_s) * 1000.0
        for adm, _ in pieces:
            adm.seq.prefill_ms += elapsed_ms

    def _prefill_unit(self) -> list[GenerationEvent]:
        started_s = time.perf_counter()
        group = prefill_group(list(self._admitting.values()), self.admission, self.prefill_tokens, self.cache.context)
        for adm in group:
            del self._admitting[adm.seq.request.key]
        vision, text, device = self.model.vision, self.model.text, self.model.device
        bos = text.embed(torch.tensor([self.config.tokenizer.bos_id], device=device))
        rows = []
        for adm in group:
            image_tokens = vision.project(torch.cat(adm.features), adm.tiling)  # (N, D)
            prompt_t = torch.tensor(adm.prompt, dtype=torch.long, device=device)
            rows.append(torch.cat([bos, image_tokens, text.embed(prompt_t)], dim=0))
        lengths = [adm.input_tokens for adm in group]
        if len(group) == 1:
            embeds = rows[0][None]
        else:  # right-pad to the group's longest, rounded up to the bucket (fewer distinct shapes)
            bucket = self.admission.prefill_length_bucket
            padded = min(self.cache.context, -(-max(lengths) // bucket) * bucket)
            embeds = rows[0].new_zeros((len(group), padded, rows[0].shape[-1]))
            for i, row in enumerate(rows):
                embeds[i, : row.shape[0]] = row
        hidden = text.prefill(embeds, self.cache, [adm.seq.slot for adm in group])  # (B, T, D)
        self.prefill_forwards += 1
        last_index = torch.tensor([n - 1 for n in lengths], device=device)
        hidden_bd = hidden[torch.arange(len(group), device=device), last_index]  # (B, D)
        logits_bv = text.logits(hidden_bd)
        events: list[GenerationEvent] = []
        now_s = time.perf_counter()
        for i, adm in enumerate(group):  # in admission order: the sampler's draws as one at a time
            seq, s = adm.seq, adm.seq.request.settings
            if seq.is_text:
                temp = torch.tensor([float(s.temperature)], device=device)
                top_p = torch.tensor([float(s.top_p)], device=device)
                logits_1v = logits_bv[i : i + 1]
                token = int(sample_tokens(logits_1v, temp, top_p, self._rng, all_greedy=s.temperature == 0)[0])
            else:
                token = int(logits_bv[i].argmax())
            seq.prefill_ms += (now_s - started_s) * 1000.0
            seq.ttft_ms = (now_s - seq.started_s) * 1000.0
            seq.decode_started_s = now_s
            if seq.is_text:
                seq.stream = WordChunker(self._token_bytes)
                self._after_text_token(seq, token, events)
            else:
                self._after_decision(seq, token, hidden_bd[i], events)
            logger.debug(
                "admitted key=%s skill=%s slot=%d tokens=%d (prefill of %d)",
                seq.request.key, seq.request.skill, seq.slot, seq.input_tokens, len(group),
            )
        return events

    def _sync(self) -> None:
        if self.model.device.type == "cuda":  # so that prefill_ms times the work, not its launch
            torch.cuda.synchronize(self.model.device)

    # ---- decoding ----------------------------------------------------------------------------
    def step(self) -> list[GenerationEvent]:
        """Drive the generator alone (tests, scripts): an admission unit when one is pending, else a
        decode step. The server does not use this: its scheduling policy picks the unit."""
        return self.admission_unit() if self._admitting else self.decode_step()

    def decode_step(self) -> list[GenerationEvent]:
        """One decode step for every decoding sequence: :meth:`launch_decode_step` + :meth:`finish_decode_step`."""
        self.launch_decode_step()
        return self.finish_decode_step()

    @torch.inference_mode()
    def launch_decode_step(self) -> None:
        """Enqueue one decode step's device work without waiting for its result.

        On CUDA the input copies, the kernels (or the captured graph's replay) and the copy of the
        sampled tokens into the pinned host buffer are queued on the generation stream and an event
        is recorded after them; on CPU the step is computed here. At most one launched step may be
        outstanding. With no decoding sequence nothing is launched and the finish returns [].
        Admit/cancel (and admission units) before the finish take effect at the next step.
        """
        if self._launched is not None:
            raise RuntimeError("a decode step is already launched: finish_decode_step() first")
        decoding = [seq for key, seq in self._by_key.items() if key not in self._admitting]
        if decoding:
            with self._on_stream():
                self._launch(decoding)
        self._launched = _LaunchedStep(decoding)

    def decode_step_done(self) -> bool:
        """True when :meth:`finish_decode_step` would not wait: nothing launched, a launch with no
        rows, or the step's device work finished. The loop asks this to run acts beside a step."""
        launched = self._launched
        return launched is None or not launched.rows or self.decode.done()

    def finish_decode_step(self) -> list[GenerationEvent]:
        """Wait for the launched step (its event), post-process it -> the events ``decode_step()`` returns.

        Rows whose request was cancelled after the launch are dropped.
        """
        launched = self._launched
        if launched is None:
            raise RuntimeError("no decode step launched: call launch_decode_step() first")
        self._launched = None
        if not launched.rows:
            return []
        out = self.decode.wait()
        live = [seq for seq in launched.rows if self._by_key.get(seq.request.key) is seq]
        return self._after_step(live, out)

    def _launch(self, decoding: list[SequenceState]) -> None:
        """Write each decoding row's input into the step's host buffers and launch the static-shape
        step (:mod:`models.moondream.decode_step`)."""
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
        step.launch(max(seq.pos for seq in decoding), region_rows, sample)

    def _after_step(self, decoding: list[SequenceState], out: np.ndarray) -> list[GenerationEvent]:
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
            with torch.inference_mode(), self._on_stream():
                shapes = self.decode.warmup(self.config.prefix_attn_len)
            logger.info("moondream decode warm-up: %d shapes, %d CUDA graphs", shapes, self.decode.graphs_captured)
