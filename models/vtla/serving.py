"""The VTLA policy behind ``act``: validation, batching keys, one forward per batch."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from models.cuda_streams import HIGHEST_STREAM_PRIORITY, model_stream, on_stream
from models.interfaces import ModelInfo, Observation
from models.memory_budget import MemoryBudget, check_fits, device_free_bytes
from models.vtla.checkpoint import build_model, load_checkpoint
from models.vtla.config import VTLAConfig
from models.vtla.frame_ring import DEFAULT_FRAME_RING_ROWS, FrameRing, StagedFrame
from models.vtla.model import VTLAInputs, VTLAModel, count_parameters
from models.vtla.normalization import ActionDenormalizer, io_entry, stats_payload
from models.vtla.observation_checks import check_observation
from models.vtla.preprocess import HostStaging, images_to_pixels, padded_token_ids
from models.vtla.presets import preset_config
from models.vtla.static_forward import StaticForward
from models.vtla.text import PromptEncoder, build_byte_tokenizer
from vtla_contracts.model_spec import ModelSpec

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # a forward runs at the smallest bucket >= its batch
DEFAULT_SEQUENCE_BUCKET = 16  # decoder sequence length rounded up to a multiple of this


class VTLAPolicy:
    """Implements :class:`models.interfaces.ActPolicy` for a loaded :class:`VTLAModel`."""

    def __init__(
        self,
        model: VTLAModel,
        tokenizer: Tokenizer,
        device: torch.device,
        random_weights: bool,
        source: str,
        batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
        sequence_bucket: int = DEFAULT_SEQUENCE_BUCKET,
        compile_forward: bool = False,
        static_inputs: bool = True,
        cuda_graphs: bool = True,
        stage_frames: bool = True,
        frame_ring_rows: int = DEFAULT_FRAME_RING_ROWS,
    ) -> None:
        buckets = tuple(sorted({int(b) for b in batch_buckets}))
        if not buckets or buckets[0] < 1:
            raise ValueError(f"batch_buckets must be positive integers, got {list(batch_buckets)}")
        if sequence_bucket < 1:
            raise ValueError(f"sequence_bucket must be >= 1, got {sequence_bucket}")
        if frame_ring_rows < 1:
            raise ValueError(f"frame_ring_rows must be >= 1, got {frame_ring_rows}")
        self.batch_buckets = buckets
        self.last_bucket: int | None = None  # the padded batch size the last act() ran at
        model.sequence_bucket = sequence_bucket
        if compile_forward:
            model.compile_core()
        self.model = model
        self.cfg: VTLAConfig = model.cfg
        self._device = device
        self._dtype = next(model.parameters()).dtype
        self._prompts = PromptEncoder(tokenizer, self.cfg.prompt, self.cfg.text.vocab_size)
        self._denormalize = ActionDenormalizer(self.cfg.action, device)
        self._staging = HostStaging(device)
        # per camera, the rows prepare() copies input-size frames into off the loop thread
        s = self.cfg.vision.image_size
        self._rings: dict[str, FrameRing] = (
            {name: FrameRing((s, s, 3), np.uint8, device, frame_ring_rows) for name in self.cfg.cameras}
            if stage_frames
            else {}
        )
        self._frames_lock = threading.Lock()  # the two counters below: act (loop) and staging_stats (any)
        self._frames_gathered = 0  # camera frames of real rows that act() took from a ring
        self._frames_stacked = 0  # camera frames of real rows that act() stacked on its own thread
        self._source = source
        # ``act`` runs on a high-priority stream on CUDA: its kernels are scheduled ahead of a
        # Moondream step queued on the generation stream (normal priority)
        self._stream = model_stream(device, HIGHEST_STREAM_PRIORITY)
        self.text_width = -(-self.cfg.prompt.max_text_tokens // sequence_bucket) * sequence_bucket
        self.static: StaticForward | None = (
            StaticForward(model, model._core, self.text_width, cuda_graphs) if static_inputs else None
        )
        self.memory = vtla_budget(self.cfg, count_parameters(model), model, self.batch_buckets[-1],
                                  sum(ring.device_bytes for ring in self._rings.values()))
        free = device_free_bytes(str(device))
        if free is not None:  # weights are resident: the largest bucket's activations must fit
            check_fits(
                MemoryBudget(0, 0, self.memory.largest_activation_bytes),
                free,
                "the VTLA policy",
                "the largest of [policy.options] batch_buckets",
            )
        self._info = ModelInfo(
            name="vtla",
            kind="vtla",
            device=str(device),
            dtype=str(self._dtype).removeprefix("torch."),
            random_weights=random_weights,
            parameters=count_parameters(model),
            source=source,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        entry: dict[str, Any] = {
            **io_entry(cfg),
            "readout": cfg.action.readout,
            "batch_buckets": list(self.batch_buckets),
            "sequence_buckets": self.sequence_lengths(),
            "static_inputs": self.static is not None,
            "cuda_graphs": self.static is not None and self.static.use_graphs,
            "stage_frames": bool(self._rings),
            "memory": self.memory.as_dict(),
            "random_weights": self._info.random_weights,
            "parameters": self._info.parameters,
        }
        entry["preset" if self._info.random_weights else "checkpoint"] = self._source
        return entry

    def stats(self) -> dict[str, Any]:
        return stats_payload(self.cfg.action.normalization)

    def staging_stats(self) -> dict[str, Any]:
        """Which path camera frames took: ``gathered`` (staged by prepare(), taken from a ring) and
        ``stacked`` (stacked by act() itself) count frames of real rows; ``rings``: each camera's
        ring counters and free rows now (empty with ``stage_frames`` off)."""
        with self._frames_lock:
            gathered, stacked = self._frames_gathered, self._frames_stacked
        return {
            "gathered": gathered,
            "stacked": stacked,
            "rings": {name: ring.stats().as_dict() for name, ring in self._rings.items()},
        }

    # -- off the loop thread --------------------------------------------------------------

    def prepare(self, obs: Observation) -> Observation:
        """Stage each camera frame that is already the input size and uint8 into that camera's ring
        (thread-safe; run by the server before validation). Other frames, and every frame when a
        ring is full, stay for act() to stack. The rows are given back when act() is done with
        them, or when the returned observation is garbage collected unanswered."""
        staged: dict[str, StagedFrame] = {}
        for name, ring in self._rings.items():
            frame = obs.images.get(name)
            if frame is not None:
                row = ring.stage(frame)  # counted as refused_shape when not the input size/uint8
                if row is not None:
                    staged[name] = row
        return dataclasses.replace(obs, staged=staged) if staged else obs

    # -- validation -----------------------------------------------------------------------

    def validate(self, obs: Observation) -> None:
        check_observation(obs, self.cfg, self._prompts)

    def batch_key(self, obs: Observation) -> Hashable:
        """One key for every valid observation: frame sizes, dtypes and absent optional inputs are
        handled inside one forward (per-row resize, masks and "no touch" tokens)."""
        return "vtla"

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) every camera frame is resized to; frames already this size skip the resize."""
        return self.cfg.input_hw

    def bucket_for(self, batch_size: int) -> int:
        """The padded batch size a forward of ``batch_size`` observations runs at."""
        for bucket in self.batch_buckets:
            if bucket >= batch_size:
                return bucket
        top = self.batch_buckets[-1]
        return -(-batch_size // top) * top

    # -- inference ------------------------------------------------------------------------

    def act(self, batch: Sequence[Observation]) -> np.ndarray:
        """One forward for observations sharing a batch_key -> (B, H, dim) float32, physical units."""
        if not batch:
            raise ValueError("act() needs at least one observation")
        bucket = self.bucket_for(len(batch))
        padded = list(batch) + [batch[-1]] * (bucket - len(batch))  # padding rows repeat a real one
        try:
            with torch.inference_mode(), self._on_stream():
                inputs = self._inputs(padded, real_rows=len(batch))
                normalized = (self.static.run(inputs) if self.static is not None else self.model(inputs))[: len(batch)]
                actions = self._denormalize(normalized)
                out = actions.cpu().numpy().astype(np.float32, copy=False)  # waits for the act stream only
        finally:
            # the rows were read (the read-back above waited for the act stream; after a failure the
            # ring's read events keep a reused row's upload behind this act's gather)
            for obs in batch:
                for frame in obs.staged.values():
                    if isinstance(frame, StagedFrame):
                        frame.release()
        self.last_bucket = bucket
        return out

    def _on_stream(self) -> contextlib.AbstractContextManager[None]:
        """Device work of ``act`` on its high-priority stream (CUDA); nothing on CPU. Every tensor of
        an ``act`` is made and used on that stream, and its result read back there, so no
        ``record_stream`` is needed; the stream waited for the default one once, after loading."""
        return on_stream(self._stream)

    def sequence_lengths(self) -> list[int]:
        """Every decoder length (a multiple of the sequence bucket) a forward can run at."""
        n_mid, bucket = self.model.num_middle_tokens, self.model.sequence_bucket
        max_text = self.cfg.prompt.max_text_tokens
        if self.cfg.action.readout == "query":
            shortest, longest = n_mid + 1, n_mid + max_text + 1
        else:  # the sequence stops at the last image token
            shortest, longest = self.cfg.num_image_tokens, self.cfg.num_image_tokens + max_text
        first, last = -(-shortest // bucket), -(-longest // bucket)
        return [k * bucket for k in range(first, last + 1)]

    def reset(self, session: str | None) -> None:
        """Stateless policy: nothing to clear."""

    def warmup(self) -> None:
        """One ``act`` at batch 1; on CUDA with static inputs then every (batch bucket, length) shape
        (captured as CUDA graphs when ``cuda_graphs``), so no capture happens while serving."""
        s = self.cfg.vision.image_size
        image = np.zeros((s, s, 3), dtype=np.uint8)
        obs = Observation(images={name: image for name in self.cfg.cameras})
        if self.cfg.proprio_dim:
            obs = Observation(images=obs.images, proprio=np.zeros(self.cfg.proprio_dim, dtype=np.float32))
        self.act([self.prepare(obs)])  # through the frame rings, as a served request goes
        logger.info("VTLA warm-up done (batch 1, %dx%d)", s, s)
        if self.static is not None and self._device.type == "cuda":
            self.warm_all_shapes(obs)

    def warm_all_shapes(self, obs: Observation) -> int:
        """Run (and with CUDA graphs capture) every (batch bucket, length) shape -> shapes run."""
        if self.static is None:
            return 0
        count = 0
        with torch.inference_mode(), self._on_stream():
            template = self._inputs([obs])
            for batch in self.batch_buckets:
                for length in self.sequence_lengths():
                    self.static.warm(batch, length, template)
                    count += 1
            if self._device.type == "cuda":
                torch.cuda.current_stream(self._device).synchronize()
        logger.info("VTLA warm-up: %d shapes, %d CUDA graphs", count, self.static.graphs_captured)
        return count

    def _inputs(self, batch: Sequence[Observation], real_rows: int | None = None) -> VTLAInputs:
        cfg, dt = self.cfg, self._dtype
        s = cfg.vision.image_size
        real = len(batch) if real_rows is None else real_rows
        pixels = [self._camera_pixels(batch, name, real) for name in cfg.cameras]
        pixel_values = torch.stack(pixels, dim=1).reshape(-1, 3, s, s)  # (B*C, 3, S, S) sample-major
        prompts = [self._prompts.encode(self._prompts.resolve(obs.instruction)) for obs in batch]
        tactile_image = tactile_mask = None
        tac = cfg.tactile
        # always tensors + masks when the model has the input: one static shape, absent rows -> no touch
        if tac.image:
            blank = np.zeros((tac.image_size, tac.image_size, 3), dtype=np.uint8)
            frames = [blank if obs.tactile_image is None else obs.tactile_image for obs in batch]
            tactile_image = self._pixels(frames, "tactile", tac.image_size, tac.image_mean, tac.image_std, "bilinear")
            present = [obs.tactile_image is not None for obs in batch]
            tactile_mask = self._mask(present, "tactile_mask")
            if tac.encoder == "resnet18":  # the predecessor's "no touch" is a zero image, not a token
                tactile_image = tactile_image * tactile_mask.view(-1, 1, 1, 1).to(tactile_image.dtype)
        force_torque = ft_mask = None
        if tac.force_torque:
            zeros = np.zeros(6, dtype=np.float32)
            rows = [zeros if obs.force_torque is None else np.asarray(obs.force_torque, np.float32) for obs in batch]
            force_torque = self._staging.to_device(rows, slot="force_torque").to(dt)
            ft_mask = self._mask([obs.force_torque is not None for obs in batch], "force_torque_mask")
        proprio = None
        if cfg.proprio_dim:
            rows = [np.asarray(obs.proprio, dtype=np.float32) for obs in batch]
            proprio = self._staging.to_device(rows, slot="proprio").to(dt)
        # static inputs: the text at one fixed width, so the shape is (batch bucket, length) only
        width = self.text_width if self.static is not None else None
        multiple = self.model.sequence_bucket
        ids_before = padded_token_ids([p[0] for p in prompts], multiple, width)
        ids_after = padded_token_ids([p[1] for p in prompts], multiple, width)
        return VTLAInputs(
            pixel_values=pixel_values,
            text_before=self._staging.upload(ids_before, "text_before"),
            text_after=self._staging.upload(ids_after, "text_after"),
            lens_before=tuple(len(p[0]) for p in prompts),
            lens_after=tuple(len(p[1]) for p in prompts),
            tactile_image=tactile_image,
            force_torque=force_torque,
            proprio=proprio,
            tactile_image_mask=tactile_mask,
            force_torque_mask=ft_mask,
        )

    def _camera_pixels(self, batch: Sequence[Observation], name: str, real_rows: int) -> torch.Tensor:
        """One camera's (B, 3, S, S) pixels: gathered from its ring when every row's frame was staged
        (one index_select on the device), else the frames stacked here."""
        pre, s = self.cfg.preprocess, self.cfg.vision.image_size
        raw: torch.Tensor | None = None
        ring = self._rings.get(name)
        if ring is not None:
            staged = [frame for obs in batch if isinstance(frame := obs.staged.get(name), StagedFrame)]
            if len(staged) == len(batch):
                raw = ring.gather(staged)  # None when a frame was released already: stacked below
        with self._frames_lock:
            if raw is None:
                self._frames_stacked += real_rows
            else:
                self._frames_gathered += real_rows
        if raw is not None:
            return images_to_pixels(raw, s, pre.image_mean, pre.image_std, pre.resize_mode, self._dtype)
        frames = [obs.images[name] for obs in batch]
        return self._pixels(frames, f"camera:{name}", s, pre.image_mean, pre.image_std, pre.resize_mode)

    def _pixels(
        self,
        frames: Sequence[np.ndarray],
        slot: str,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        mode: str,
    ) -> torch.Tensor:
        """Frames of any sizes and dtypes -> (B, 3, size, size): each (shape, dtype) group resized together."""
        groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
        for row, frame in enumerate(frames):
            groups.setdefault((frame.shape, frame.dtype.str), []).append(row)
        if len(groups) == 1:
            raw = self._staging.to_device(list(frames), slot=slot)
            return images_to_pixels(raw, size, mean, std, mode, self._dtype)
        out = torch.empty((len(frames), 3, size, size), dtype=self._dtype, device=self._device)
        for (shape, dtype), rows in groups.items():
            raw = self._staging.to_device([frames[r] for r in rows], slot=f"{slot}:{shape}:{dtype}")
            index = torch.tensor(rows, device=self._device)
            out[index] = images_to_pixels(raw, size, mean, std, mode, self._dtype)
        return out

    def _mask(self, present: Sequence[bool], slot: str) -> torch.Tensor:
        return self._staging.upload(np.asarray(present, dtype=np.bool_), slot)


def vtla_budget(
    cfg: VTLAConfig, parameters: int, model: VTLAModel, batch: int, staging_bytes: int = 0
) -> MemoryBudget:
    """Weights, no KV cache, the largest activation (estimate) of a forward at ``batch``, and the
    frame rings' rows (``staging_bytes``)."""
    dtype_bytes = next(model.parameters()).element_size()
    n_cam = len(cfg.cameras)
    vision = batch * n_cam * cfg.vision.num_tokens * cfg.vision.intermediate_size * dtype_bytes
    seq = model.num_middle_tokens + cfg.prompt.max_text_tokens + 2
    seq = -(-seq // model.sequence_bucket) * model.sequence_bucket
    text = batch * seq * cfg.text.intermediate_size * dtype_bytes * 2  # gate and up projections
    return MemoryBudget(parameters * dtype_bytes, 0, 2 * max(vision, text), staging_bytes)


def _options(spec: ModelSpec) -> dict[str, Any]:
    """``[policy.options]``: ``batch_buckets`` (list of batch sizes), ``sequence_bucket`` (tokens),
    ``compile`` (torch.compile the forward), ``static_inputs`` (run every forward on reused buffers
    of its (batch bucket, length) shape, default true), ``cuda_graphs`` (CUDA: capture each shape
    once and replay it, default true; needs ``static_inputs``), ``stage_frames`` (copy input-size
    camera frames into per-camera frame rings off the loop thread, default true) and
    ``frame_ring_rows`` (rows per camera ring, default 256)."""
    options = dict(spec.options)
    known = (
        "batch_buckets", "sequence_bucket", "compile", "static_inputs", "cuda_graphs", "stage_frames",
        "frame_ring_rows",
    )
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown [policy.options] for the VTLA: {unknown}; known: {', '.join(known)}")
    out: dict[str, Any] = {}
    if "batch_buckets" in options:
        out["batch_buckets"] = tuple(int(b) for b in options["batch_buckets"])
    if "sequence_bucket" in options:
        out["sequence_bucket"] = int(options["sequence_bucket"])
    if "compile" in options:
        out["compile_forward"] = bool(options["compile"])
    for name in ("static_inputs", "cuda_graphs", "stage_frames"):
        if name in options:
            out[name] = bool(options[name])
    if "frame_ring_rows" in options:
        rows = options["frame_ring_rows"]
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"[policy.options] frame_ring_rows must be a positive integer, got {rows!r}")
        out["frame_ring_rows"] = rows
    return out


def load_policy(spec: ModelSpec, device: str, dtype: str) -> VTLAPolicy:
    """Registry factory: ``spec.path`` -> that checkpoint; empty -> ``spec.preset``, random weights."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {sorted(DTYPES)}")
    torch_device = torch.device(device)
    torch_dtype = DTYPES[dtype]
    if spec.path:
        model, tokenizer = load_checkpoint(spec.path, torch_device, torch_dtype)
        policy = VTLAPolicy(
            model, tokenizer, torch_device, random_weights=False, source=str(Path(spec.path)), **_options(spec)
        )
    else:
        if spec.hub_download:
            raise ValueError(
                "VTLA has no public Hub checkpoint: set the policy's path to a local checkpoint directory "
                "(convert the predecessor's with `vtla-bridge convert-vtla`), or leave hub_download off"
            )
        cfg = preset_config(spec.preset)
        model = build_model(cfg, torch_device, torch_dtype)
        policy = VTLAPolicy(
            model, build_byte_tokenizer(), torch_device, random_weights=True, source=spec.preset, **_options(spec)
        )
        logger.warning("VTLA preset %r has RANDOM weights: its actions are meaningless", spec.preset)
    info = policy.info
    logger.info(
        "VTLA loaded: %s on %s (%s), %.1fM parameters",
        info.source,
        info.device,
        info.dtype,
        info.parameters / 1e6,
    )
    return policy
