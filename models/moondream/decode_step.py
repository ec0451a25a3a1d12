"""The Moondream decode step with static shapes: fixed rows, bucketed length, device buffers, one read-back.

Every decode step runs all ``max_sequences`` cache rows (inactive rows are dummies: token 0 at
position 0 of their own slot, which admission's prefill overwrites before that slot is read) and
attends over a length rounded up to ``length_bucket`` positions, so the step has a handful of
shapes: ``(attend_len, region, sample)``, where ``region`` adds the coordinate/size heads
(when a detect/point row decodes) and ``sample`` the top-p sampler (when a row has a
temperature > 0).

Per step the host writes each row's input (token id, position, input kind, coordinate/size
value, temperature, top-p) into two pinned host buffers, which are copied into fixed device
buffers in place (non-blocking); the step writes token, coordinate and size for every row into
one device output buffer, read back through a pinned buffer: the one host synchronisation of a
step. Nothing inside the layer stack syncs.

On CUDA each shape is captured once in a ``torch.cuda.CUDAGraph`` (after an eager warm-up run)
and replayed; where capture fails the step runs eagerly and says so in the log. ``cuda_graphs``
turns capture off; ``compile`` wraps the step in ``torch.compile(fullgraph=True, dynamic=False)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.moondream.region import RegionHead
from models.moondream.sampling import sample_with_noise
from models.moondream.text import KVCache, TextModel

logger = logging.getLogger(__name__)

# input kinds of a row (column KIND of the integer inputs)
INPUT_TOKEN = 0
INPUT_COORD = 1
INPUT_SIZE = 2

# integer input columns: token id, position, kind
COL_TOKEN, COL_POSITION, COL_KIND = 0, 1, 2
INT_COLUMNS = 3
# float input columns: value 0 (coordinate, or width), value 1 (height), temperature, top-p
COL_VALUE0, COL_VALUE1, COL_TEMPERATURE, COL_TOP_P = 0, 1, 2, 3
FLOAT_COLUMNS = 4
# output columns: sampled token, decoded coordinate, decoded width, decoded height
OUT_TOKEN, OUT_COORD, OUT_WIDTH, OUT_HEIGHT = 0, 1, 2, 3
OUT_COLUMNS = 4


@dataclass(frozen=True)
class DecodeOptions:
    length_bucket: int = 128  # attended length rounded up to a multiple of this
    cuda_graphs: bool = True  # capture each shape in a CUDA graph (CUDA only)
    compile: bool = False  # torch.compile(fullgraph=True, dynamic=False) the step

    def __post_init__(self) -> None:
        if self.length_bucket < 1:
            raise ValueError("decode length_bucket must be >= 1")


def length_buckets(context: int, bucket: int, min_len: int = 1) -> list[int]:
    """Every attended length a step can use for positions in [min_len - 1, context)."""
    out = []
    length = bucket * max(1, -(-min_len // bucket))
    while length < context:
        out.append(length)
        length += bucket
    out.append(context)
    return out


class StepGraph(nn.Module):
    """The step as one module call over fixed buffers (what torch.compile and graph capture see)."""

    def __init__(self, text: TextModel, region: RegionHead) -> None:
        super().__init__()
        self.text = text
        self.region = region

    def forward(
        self,
        cache: KVCache,
        int_in: torch.Tensor,  # (S, INT_COLUMNS) int64
        float_in: torch.Tensor,  # (S, FLOAT_COLUMNS) float32
        noise: torch.Tensor,  # (S, V) float32, Exponential(1)
        out: torch.Tensor,  # (S, OUT_COLUMNS) float32, written
        attend_len: int,
        region_rows: bool,
        sample: bool,
    ) -> None:
        text, region = self.text, self.region
        kind = int_in[:, COL_KIND]
        positions = int_in[:, COL_POSITION]
        embeds = text.embed(int_in[:, COL_TOKEN])  # (S, D)
        if region_rows:
            coord = region.encode_coord(float_in[:, COL_VALUE0]).to(embeds.dtype)
            size = region.encode_size(float_in[:, COL_VALUE0 : COL_VALUE1 + 1]).to(embeds.dtype)
            embeds = torch.where((kind == INPUT_COORD)[:, None], coord, embeds)
            embeds = torch.where((kind == INPUT_SIZE)[:, None], size, embeds)
        hidden = text.decode(embeds[:, None], cache, positions, attend_len)[:, 0]  # (S, D)
        logits = text.logits(hidden)
        if sample:
            temperature = float_in[:, COL_TEMPERATURE]
            tokens = sample_with_noise(logits, temperature, float_in[:, COL_TOP_P], noise)
        else:
            tokens = logits.argmax(dim=-1)
        out[:, OUT_TOKEN] = tokens.to(out.dtype)
        if region_rows:
            out[:, OUT_COORD] = region.decode_coord(hidden)
            out[:, OUT_WIDTH : OUT_HEIGHT + 1] = region.decode_size(hidden)


class DecodeStep:
    """Fixed buffers for ``cache.slots`` rows and the step over them (eager, compiled or graph replay)."""

    def __init__(
        self,
        text: TextModel,
        region: RegionHead,
        cache: KVCache,
        options: DecodeOptions,
        generator: torch.Generator,
    ) -> None:
        device = text.wte.device
        self.device = device
        self.cache = cache
        self.options = options
        self._rng = generator
        rows, vocab = cache.slots, text.config.vocab_size
        pin = device.type == "cuda"
        self.host_int = torch.zeros((rows, INT_COLUMNS), dtype=torch.int64, pin_memory=pin)
        self.host_float = torch.zeros((rows, FLOAT_COLUMNS), dtype=torch.float32, pin_memory=pin)
        self._host_out = torch.zeros((rows, OUT_COLUMNS), dtype=torch.float32, pin_memory=pin)
        # numpy views made once: the host fills rows and reads results without any torch call
        self.int_rows: np.ndarray = self.host_int.numpy()
        self.float_rows: np.ndarray = self.host_float.numpy()
        self._out_rows: np.ndarray = self._host_out.numpy()
        self._int_in = torch.zeros((rows, INT_COLUMNS), dtype=torch.int64, device=device)
        self._float_in = torch.zeros((rows, FLOAT_COLUMNS), dtype=torch.float32, device=device)
        self._noise = torch.ones((rows, vocab), dtype=torch.float32, device=device)
        self._out = torch.zeros((rows, OUT_COLUMNS), dtype=torch.float32, device=device)
        self._module = StepGraph(text, region)
        self._call = (
            torch.compile(self._module, fullgraph=True, dynamic=False) if options.compile else self._module
        )
        self._use_graphs = options.cuda_graphs and device.type == "cuda"
        self._graphs: dict[tuple[int, bool, bool], torch.cuda.CUDAGraph] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self._use_graphs else None
        self._done = torch.cuda.Event() if device.type == "cuda" else None
        self.last_shape: tuple[int, bool, bool] | None = None
        self.steps_run = 0
        self._in_flight = False

    @property
    def rows(self) -> int:
        return self.cache.slots

    @property
    def graphs_captured(self) -> int:
        return len(self._graphs)

    def attend_len(self, max_position: int) -> int:
        """The bucketed length that covers positions 0..max_position."""
        bucket = self.options.length_bucket
        return min(self.cache.context, bucket * (max_position // bucket + 1))

    def clear_rows(self) -> None:
        """Every row inactive: token 0 at position 0, greedy."""
        self.int_rows[:] = 0
        self.float_rows[:] = 0.0
        self.float_rows[:, COL_TOP_P] = 1.0

    def run(self, max_position: int, region_rows: bool, sample: bool) -> np.ndarray:
        """One step with the rows the host wrote -> (S, OUT_COLUMNS) float32 host view of the results.

        The returned array is reused by the next call; read it before stepping again.
        ``run`` = :meth:`launch` + :meth:`wait`.
        """
        self.launch(max_position, region_rows, sample)
        return self.wait()

    @property
    def in_flight(self) -> bool:
        """A launched step whose results have not been waited for."""
        return self._in_flight

    def launch(self, max_position: int, region_rows: bool, sample: bool) -> None:
        """Queue one step's device work and the read-back of its outputs, without waiting.

        On CUDA the input copies, the kernels (or graph replay) and the device->host copy of the
        outputs into the pinned buffer are queued on the current stream and an event is recorded
        after them; on CPU the step simply runs. The host buffers may be rewritten after
        :meth:`wait` (the input copies precede the event).
        """
        if self._in_flight:
            raise RuntimeError("a decode step is already in flight: wait() for it first")
        shape = (self.attend_len(max_position), region_rows, sample)
        self.last_shape = shape
        self.steps_run += 1
        self._int_in.copy_(self.host_int, non_blocking=True)
        self._float_in.copy_(self.host_float, non_blocking=True)
        if sample:
            self._noise.exponential_(generator=self._rng)
        graph = self._graphs.get(shape) if self._use_graphs else None
        if graph is None and self._use_graphs:
            graph = self._capture(shape)
        if graph is not None:
            graph.replay()
        else:
            self._call(self.cache, self._int_in, self._float_in, self._noise, self._out, *shape)
        self._host_out.copy_(self._out, non_blocking=True)
        if self._done is not None:
            self._done.record()
        self._in_flight = True

    def done(self) -> bool:
        """No step in flight, or its device work has finished (CUDA: the event's ``query()``, no
        synchronisation); on CPU a launched step is computed inside :meth:`launch`, so always True."""
        return not self._in_flight or self._done is None or bool(self._done.query())

    def wait(self) -> np.ndarray:
        """Wait for the launched step (the step's one host synchronisation) -> its host output view."""
        if not self._in_flight:
            raise RuntimeError("no decode step in flight: launch() one first")
        if self._done is not None:
            self._done.synchronize()
        self._in_flight = False
        return self._out_rows

    def _capture(self, shape: tuple[int, bool, bool]) -> torch.cuda.CUDAGraph | None:
        """Capture one shape; None (eager from then on, for that shape) where capture fails."""
        args = (self.cache, self._int_in, self._float_in, self._noise, self._out, *shape)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._call(*args)  # warm-up: lazy initialisation must not happen during capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._graph_pool):
                self._call(*args)
        except RuntimeError as exc:
            logger.warning("CUDA graph capture of decode shape %s failed (%s): running it eagerly", shape, exc)
            self._use_graphs = False
            return None
        self._graphs[shape] = graph
        return graph

    def warmup(self, min_position: int) -> int:
        """Run (and on CUDA capture) every shape once with inactive rows; returns the shapes run."""
        self.clear_rows()
        count = 0
        for attend_len in length_buckets(self.cache.context, self.options.length_bucket, min_position + 1):
            for region_rows in (False, True):
                for sample in (False, True):
                    self.run(attend_len - 1, region_rows, sample)
                    count += 1
        return count
