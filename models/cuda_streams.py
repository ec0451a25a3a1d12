"""The CUDA streams the two models run on: ``act`` on a high-priority stream, generation on a
normal one, so a decode step queued on the GPU does not delay an ``act`` kernel launch.

On a non-CUDA device there is no stream and :func:`on_stream` does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# CUDA stream priorities: lower is higher; torch maps values beyond the device's range to its
# highest priority, so this asks for the highest there is
HIGHEST_STREAM_PRIORITY = -(2**10)
NORMAL_STREAM_PRIORITY = 0


def model_stream(device: torch.device, priority: int = NORMAL_STREAM_PRIORITY) -> torch.cuda.Stream | None:
    """A stream of its own for one model on ``device`` (None off CUDA). It waits once for the
    default stream, on which the weights (and caches) were written while loading."""
    if device.type != "cuda":
        return None
    stream = torch.cuda.Stream(device, priority=priority)
    stream.wait_stream(torch.cuda.current_stream(device))
    return stream


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """Device work inside runs on ``stream``; with None (CPU), nothing changes."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield
