"""The VTLA forward over fixed device buffers, one set per (batch bucket, sequence length) shape.

``VTLAModel.forward_tensors`` takes only tensors, and with the text padded to one fixed width
(the prompt limit rounded up to the sequence bucket) its shapes depend only on the batch bucket
and the decoder length ``L`` (a multiple of the sequence bucket). Each call copies the batch's
tensors into that shape's static buffers (in place, same storage every call: what a CUDA graph
needs) and runs the forward on them: eagerly, through ``torch.compile``, or on CUDA by replaying
the shape's captured ``torch.cuda.CUDAGraph`` (captured after an eager warm-up run; where capture
fails that shape runs eagerly from then on, logged). Inputs that depend only on the batch
bucket (pixels, text ids, tactile, proprio, masks) share one set of buffers across lengths.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch

from models.vtla.model import VTLAInputs, VTLAModel

logger = logging.getLogger(__name__)

CoreFn = Callable[..., torch.Tensor]
# the optional inputs of forward_tensors, in its argument order after the readout
OPTIONAL_FIELDS = ("tactile_image", "force_torque", "proprio", "tactile_image_mask", "force_torque_mask")


@dataclasses.dataclass
class BatchBuffers:
    """Device buffers of one batch bucket (fixed text width)."""

    pixel_values: torch.Tensor
    text_before: torch.Tensor
    text_after: torch.Tensor
    optional: dict[str, torch.Tensor]


@dataclasses.dataclass
class ShapeBuffers:
    """Buffers of one (batch bucket, length) shape, its output, and its graph when captured."""

    batch: BatchBuffers
    index: torch.Tensor  # (B, L) int64
    readout: torch.Tensor  # (B,) int64
    out: torch.Tensor | None = None  # the graph's output (static) once captured
    graph: torch.cuda.CUDAGraph | None = None

    def args(self) -> tuple[torch.Tensor | None, ...]:
        b = self.batch
        optional = tuple(b.optional.get(name) for name in OPTIONAL_FIELDS)
        return (b.pixel_values, b.text_before, b.text_after, self.index, self.readout, *optional)


class StaticForward:
    """Runs ``core`` (``VTLAModel.forward_tensors`` or its compiled version) on reused buffers."""

    def __init__(self, model: VTLAModel, core: CoreFn, text_width: int, cuda_graphs: bool) -> None:
        self.model = model
        self.core = core
        self.text_width = text_width
        self.device = next(model.parameters()).device
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._batches: dict[int, BatchBuffers] = {}
        self._shapes: dict[tuple[int, int], ShapeBuffers] = {}
        self.last_shape: tuple[int, int] | None = None

    @property
    def graphs_captured(self) -> int:
        return sum(1 for s in self._shapes.values() if s.graph is not None)

    def shapes(self) -> list[tuple[int, int]]:
        return list(self._shapes)

    def buffers(self, batch: int, length: int) -> ShapeBuffers:
        return self._shapes[(batch, length)]

    def run(self, inputs: VTLAInputs) -> torch.Tensor:
        """-> (B, H, dim) normalised actions; valid until the next run (the graph's output buffer)."""
        if inputs.text_before.shape[1] != self.text_width or inputs.text_after.shape[1] != self.text_width:
            raise ValueError(f"static forward needs text padded to {self.text_width} tokens")
        index, readout = self.model._index(
            inputs.lens_before, inputs.lens_after, self.text_width, self.text_width, self.device
        )
        shape = self._shape(inputs, index.shape[1])
        b = shape.batch
        b.pixel_values.copy_(inputs.pixel_values, non_blocking=True)
        b.text_before.copy_(inputs.text_before, non_blocking=True)
        b.text_after.copy_(inputs.text_after, non_blocking=True)
        for name, buffer in b.optional.items():
            value = getattr(inputs, name)
            assert value is not None, f"{name} missing from a batch of a model that takes it"
            buffer.copy_(value, non_blocking=True)
        shape.index.copy_(index, non_blocking=True)
        shape.readout.copy_(readout, non_blocking=True)
        return self._forward(shape)

    def warm(self, batch: int, length: int, template: VTLAInputs) -> None:
        """Run (and on CUDA capture) one shape on zero buffers shaped like ``template``'s rows."""
        shape = self._shape(template, length, batch)
        self._forward(shape)

    def _forward(self, shape: ShapeBuffers) -> torch.Tensor:
        key = (shape.index.shape[0], shape.index.shape[1])
        self.last_shape = key
        if self.use_graphs and shape.graph is None:
            self._capture(shape)
        if shape.graph is not None:
            shape.graph.replay()
            assert shape.out is not None
            return shape.out
        return self.core(*shape.args())

    def _capture(self, shape: ShapeBuffers) -> None:
        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            self.core(*shape.args())  # warm-up: lazy initialisation must not happen during capture
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=side):
                out = self.core(*shape.args())
        except RuntimeError as exc:
            key = tuple(shape.index.shape)
            logger.warning("CUDA graph capture of VTLA shape %s failed (%s): running it eagerly", key, exc)
            self.use_graphs = False
            return
        stream.wait_stream(side)
        shape.graph, shape.out = graph, out

    def _shape(self, like: VTLAInputs, length: int, batch: int | None = None) -> ShapeBuffers:
        rows = like.text_before.shape[0] if batch is None else batch
        key = (rows, length)
        shape = self._shapes.get(key)
        if shape is None:
            shape = ShapeBuffers(
                batch=self._batch(like, rows),
                index=torch.zeros((rows, length), dtype=torch.long, device=self.device),
                readout=torch.zeros((rows,), dtype=torch.long, device=self.device),
            )
            self._shapes[key] = shape
        return shape

    def _batch(self, like: VTLAInputs, rows: int) -> BatchBuffers:
        buffers = self._batches.get(rows)
        if buffers is None:
            per_row = like.pixel_values.shape[0] // like.text_before.shape[0]  # cameras

            def zeros(t: torch.Tensor, first: int) -> torch.Tensor:
                return torch.zeros((first, *t.shape[1:]), dtype=t.dtype, device=self.device)

            optional = {
                name: zeros(value, rows)
                for name in OPTIONAL_FIELDS
                if (value := getattr(like, name)) is not None
            }
            buffers = BatchBuffers(
                pixel_values=zeros(like.pixel_values, rows * per_row),
                text_before=torch.zeros((rows, self.text_width), dtype=torch.long, device=self.device),
                text_after=torch.zeros((rows, self.text_width), dtype=torch.long, device=self.device),
                optional=optional,
            )
            self._batches[rows] = buffers
        return buffers
