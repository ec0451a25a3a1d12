"""Camera frames staged into a fixed pool of rows as they arrive, so that ``act`` gathers a batch
with one device-side ``index_select`` instead of stacking every frame on the inference loop.

A :class:`FrameRing` holds ``capacity`` rows of one (shape, dtype), the model's input frame.
:meth:`FrameRing.stage` runs on the thread that parsed the request (the server's I/O thread or
a decode worker): it takes a free row, copies the frame into it and returns a
:class:`StagedFrame` (None when the ring is full or the frame is not of the ring's shape and
dtype: the caller then keeps the frame on the old path). On CUDA each row lives twice, in a
pinned host buffer and in a device tensor; ``stage`` copies the host row to the device row
asynchronously on a dedicated upload stream and records a CUDA event. On CPU the host rows are
the device rows (one copy). :meth:`FrameRing.gather` (on the loop thread) makes the current
stream wait for the rows' uploads (one event: the latest upload of the batch, since the upload
stream runs its copies in order) and returns ``rows[index]`` as a (B, *shape) tensor.

Rows and their reuse:

* A row returns to the free list when its StagedFrame is released: explicitly
  (:meth:`StagedFrame.release`, idempotent) or, as a safety net, when the StagedFrame is garbage
  collected (``weakref.finalize``), so a request that is cancelled, expires or is refused never
  leaks its row.
* A released frame is never gathered: :meth:`gather` returns None for a batch with a released
  (or foreign) frame and the caller uses the frame's array instead. A frame being gathered is
  referenced by its Observation, so only an explicit ``release`` could free it meanwhile; a
  release during a gather is deferred until the gather has enqueued its read (per-row reader
  counts), so it cannot hand the row to ``stage`` mid-copy.
* The device may still be reading a row after ``gather`` returns (CUDA: the ``index_select``
  is asynchronous). ``gather`` records an event on the reading stream after it; the upload of
  the next frame staged into that row waits for that event on the upload stream, and the host
  write into a reused row first waits for the row's previous upload (an event that has long
  completed in practice). The VTLA's ``act`` ends by reading its actions back to the host, which
  waits for the act stream, so by the time ``act`` releases its frames every read is done
  anyway; the events make reuse safe even when an ``act`` fails between gather and read-back.
* ``weakref.finalize`` callbacks may run on any thread, also inside this module while it holds
  its lock (a collection triggered by an allocation): the lock is re-entrant.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_FRAME_RING_ROWS = 256


@dataclass(frozen=True)
class FrameRingStats:
    """Counters of one ring (totals since it was made) and its rows free now."""

    capacity: int
    free_rows: int
    staged: int  # frames copied into a row
    refused_full: int  # stage() found no free row
    refused_shape: int  # stage() got a frame of another shape or dtype
    gathered_rows: int  # rows returned by gather()

    def as_dict(self) -> dict[str, int]:
        return {
            "capacity": self.capacity,
            "free_rows": self.free_rows,
            "staged": self.staged,
            "refused_full": self.refused_full,
            "refused_shape": self.refused_shape,
            "gathered_rows": self.gathered_rows,
        }


class StagedFrame:
    """One frame held in a row of a :class:`FrameRing` until released (or garbage collected)."""

    __slots__ = ("__weakref__", "_finalizer", "ready", "ring", "row", "upload_order")

    def __init__(self, ring: FrameRing, row: int, ready: torch.cuda.Event | None, upload_order: int) -> None:
        self.ring = ring
        self.row = row
        self.ready = ready  # CUDA: recorded on the upload stream after the row's copy; None on CPU
        self.upload_order = upload_order  # CUDA: this copy's place on the upload stream (0 on CPU)
        self._finalizer = weakref.finalize(self, ring._free_row, row)
        self._finalizer.atexit = False

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def release(self) -> None:
        """Give the row back (idempotent). The frame can no longer be gathered."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"StagedFrame(row={self.row}, released={self.released})"


class FrameRing:
    """A thread-safe pool of ``capacity`` rows of ``shape``/``dtype`` on ``device`` (see the module doc)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype | type[np.generic],
        device: torch.device,
        capacity: int = DEFAULT_FRAME_RING_ROWS,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"a frame ring needs at least one row, got capacity {capacity}")
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.capacity = capacity
        self._cuda = device.type == "cuda"
        if self._cuda and device.index is None:  # stage() runs on other threads, whose current device may differ
            device = torch.device("cuda", torch.cuda.current_device())
        self._device = device
        torch_dtype = torch.from_numpy(np.zeros(0, dtype=self.dtype)).dtype
        self._host = torch.empty((capacity, *self.shape), dtype=torch_dtype, pin_memory=self._cuda)
        self._host_rows = self._host.numpy()
        self._rows = torch.empty_like(self._host, device=device) if self._cuda else self._host
        # gathered as (capacity, row elements): one contiguous run per index (CPU: ~3x faster than 4-D)
        self._flat_rows = self._rows.view(capacity, -1)
        self._upload: torch.cuda.Stream | None = torch.cuda.Stream(device) if self._cuda else None
        self._uploaded: list[torch.cuda.Event | None] = [None] * capacity  # each row's last upload
        self._upload_lock = threading.Lock()  # copies enter the upload stream in upload_order
        self._uploads = 0
        self._read: list[torch.cuda.Event | None] = [None] * capacity  # each row's last gather
        self._lock = threading.RLock()
        self._free: list[int] = list(range(capacity - 1, -1, -1))  # a stack: pop() gives row 0 first
        self._readers = [0] * capacity  # gathers between their check and their enqueued read
        self._free_after_read: set[int] = set()
        self._staged = self._refused_full = self._refused_shape = self._gathered = 0

    @property
    def row_bytes(self) -> int:
        return int(self._host_rows[0].nbytes)

    @property
    def device_bytes(self) -> int:
        """Bytes of the rows on the ring's device (on CUDA the pinned host rows come on top)."""
        return self.capacity * self.row_bytes

    def fits(self, frame: object) -> bool:
        return isinstance(frame, np.ndarray) and frame.shape == self.shape and frame.dtype == self.dtype

    def stage(self, frame: np.ndarray) -> StagedFrame | None:
        """Copy ``frame`` into a free row -> its StagedFrame; None when full or of another shape/dtype."""
        if not self.fits(frame):
            with self._lock:
                self._refused_shape += 1
            return None
        with self._lock:
            if not self._free:
                self._refused_full += 1
                return None
            row = self._free.pop()
        try:
            ready, order = self._copy_in(row, frame)
        except BaseException:
            self._free_row(row)
            raise
        with self._lock:
            self._staged += 1
        return StagedFrame(self, row, ready, order)

    def _copy_in(self, row: int, frame: np.ndarray) -> tuple[torch.cuda.Event | None, int]:
        """-> (the upload's event, its upload_order). The row is this thread's (off the free list):
        its buffers need no lock."""
        if self._upload is None:
            np.copyto(self._host_rows[row], frame)
            return None, 0
        previous = self._uploaded[row]
        if previous is not None:
            previous.synchronize()  # the host row's last copy to the device has finished
        np.copyto(self._host_rows[row], frame)
        ready = torch.cuda.Event()
        with self._upload_lock, torch.cuda.device(self._device), torch.cuda.stream(self._upload):
            read = self._read[row]
            if read is not None:
                self._upload.wait_event(read)  # the last gather of this row has read it
            self._rows[row].copy_(self._host[row], non_blocking=True)
            ready.record(self._upload)
            self._uploads += 1
            order = self._uploads
        self._uploaded[row] = ready
        return ready, order

    def gather(self, staged: Sequence[StagedFrame]) -> torch.Tensor | None:
        """(B, *shape) on the device, row b = ``staged[b]``'s frame (a frame may repeat); None
        when a frame is released or not this ring's. On CUDA the current stream waits for the
        rows' uploads; the result is valid on that stream."""
        if not staged:
            raise ValueError("gather() needs at least one staged frame")
        with self._lock:
            if any(frame.ring is not self or frame.released for frame in staged):
                return None
            rows = [frame.row for frame in staged]
            for row in set(rows):
                self._readers[row] += 1
        read: torch.cuda.Event | None = None
        try:
            index = torch.tensor(rows, dtype=torch.int64)
            if self._cuda:
                stream = torch.cuda.current_stream(self._device)
                # one stream, work in order: the latest upload's event covers all earlier ones
                latest = max(staged, key=lambda f: f.upload_order).ready
                if latest is not None:
                    stream.wait_event(latest)
                out = torch.index_select(self._flat_rows, 0, index.to(self._device, non_blocking=True))
                read = torch.cuda.Event()
                read.record(stream)
            else:
                out = torch.index_select(self._flat_rows, 0, index)  # a copy: the rows may be reused after
        finally:
            with self._lock:
                for row in set(rows):
                    if read is not None:
                        self._read[row] = read
                    self._readers[row] -= 1
                    if self._readers[row] == 0 and row in self._free_after_read:
                        self._free_after_read.discard(row)
                        self._free.append(row)
        with self._lock:
            self._gathered += len(rows)
        return out.view(len(rows), *self.shape)

    def _free_row(self, row: int) -> None:
        """A StagedFrame's finalizer (explicit release or garbage collection): runs once per frame."""
        with self._lock:
            if self._readers[row]:
                self._free_after_read.add(row)
            else:
                self._free.append(row)

    def stats(self) -> FrameRingStats:
        with self._lock:
            return FrameRingStats(
                capacity=self.capacity,
                free_rows=len(self._free),
                staged=self._staged,
                refused_full=self._refused_full,
                refused_shape=self._refused_shape,
                gathered_rows=self._gathered,
            )
