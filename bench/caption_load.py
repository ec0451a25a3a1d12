"""Moondream load: N caption streams in a closed loop, in a separate process.

Used by the control benchmark (``act`` latency while captions stream) and the GPU benchmark
(TTFT and tokens/s at 1/8/32 sequences). One asyncio event loop with one pipelined
:class:`AsyncBridgeClient` drives all streams, as a busy HTTP companion would.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.frames import scene_frame
from bench.lifecycle import StartStop
from bench.stats import summarize
from bridge.aio_client import AsyncBridgeClient
from bridge.errors import BridgeError
from bridge.messages import Partial, Reply, image_arg
from bridge.protocol import OP_CAPTION

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionCommand:
    endpoint: str
    streams: int
    start_at: float  # time.monotonic()
    end_at: float  # no new caption starts after this
    frame_hw: tuple[int, int] = (378, 378)
    length: str = "normal"
    max_tokens: int = 64
    timeout_s: float = 120.0


@dataclass
class CaptionRecord:
    ttft_ms: float  # client side: request sent -> first streamed chunk (NaN when none came)
    total_ms: float
    chunks: int
    output_tokens: int
    server_ttft_ms: float  # the server's metrics.ttft_ms
    started_s: float
    finished_s: float


@dataclass
class CaptionLoadResult:
    records: list[CaptionRecord] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


async def _one_stream(
    client: AsyncBridgeClient, args: dict[str, Any], command: CaptionCommand, out: CaptionLoadResult
) -> None:
    while time.monotonic() < command.end_at:
        started = time.monotonic()
        first_ms = float("nan")
        chunks = 0
        final: Reply | None = None
        try:
            async for event in client.stream(OP_CAPTION, args, timeout_s=command.timeout_s):
                if isinstance(event, Partial):
                    if chunks == 0:
                        first_ms = (time.monotonic() - started) * 1000.0
                    chunks += 1
                else:
                    final = event
        except BridgeError as exc:
            out.errors[exc.code] = out.errors.get(exc.code, 0) + 1
            await asyncio.sleep(0.05)
            continue
        finished = time.monotonic()
        metrics = final.result.get("metrics", {}) if final is not None else {}
        out.records.append(
            CaptionRecord(
                ttft_ms=first_ms,
                total_ms=(finished - started) * 1000.0,
                chunks=chunks,
                output_tokens=int(metrics.get("output_tokens", 0)),
                server_ttft_ms=float(metrics.get("ttft_ms", float("nan"))),
                started_s=started,
                finished_s=finished,
            )
        )


async def run_captions(command: CaptionCommand, seed: int = 0) -> CaptionLoadResult:
    frame = scene_frame(*command.frame_hw, seed=seed)
    args = {
        "image": image_arg(frame),
        "length": command.length,
        "settings": {"max_tokens": command.max_tokens},
    }
    out = CaptionLoadResult()
    client = AsyncBridgeClient(command.endpoint, timeout_s=command.timeout_s)
    try:
        await asyncio.sleep(max(0.0, command.start_at - time.monotonic()))
        await asyncio.gather(*(_one_stream(client, args, command, out) for _ in range(command.streams)))
    finally:
        await client.close()
    return out


def span_s(result: CaptionLoadResult) -> float:
    """First caption started -> last caption finished (0 when none ran)."""
    if not result.records:
        return 0.0
    return max(r.finished_s for r in result.records) - min(r.started_s for r in result.records)


def summarize_captions(result: CaptionLoadResult, window_s: float) -> dict[str, Any]:
    """TTFT percentiles, tokens/s over ``window_s`` (all streams), per-caption decode rate.

    ``window_s`` should be the time the captions actually ran (see :func:`span_s`).
    """
    records = result.records
    ttft = [r.ttft_ms for r in records if np.isfinite(r.ttft_ms)]
    tokens = sum(r.output_tokens for r in records)
    per_stream_tok_s = [
        r.output_tokens / ((r.total_ms - r.ttft_ms) / 1000.0)
        for r in records
        if np.isfinite(r.ttft_ms) and r.total_ms > r.ttft_ms and r.output_tokens > 1
    ]
    return {
        "captions": len(records),
        "output_tokens": tokens,
        "tokens_per_s": tokens / window_s if window_s > 0 else float("nan"),
        "ttft": summarize(ttft).as_dict(),
        "server_ttft": summarize(
            [r.server_ttft_ms for r in records if np.isfinite(r.server_ttft_ms)]
        ).as_dict(),
        "caption_ms": summarize([r.total_ms for r in records]).as_dict(),
        "per_stream_tokens_per_s_p50": float(np.median(per_stream_tok_s))
        if per_stream_tok_s
        else float("nan"),
        "errors": dict(result.errors),
    }


def _load_main(commands: Any, results: Any) -> None:
    results.put(("ready", None))
    while True:
        command = commands.get()
        if command is None:
            return
        try:
            results.put(("done", asyncio.run(run_captions(command))))
        except Exception as exc:  # reported to the parent, which raises
            results.put(("failed", f"{type(exc).__name__}: {exc}"))


class CaptionLoad(StartStop):
    """A spawned process that runs :class:`CaptionCommand`\\ s; ``begin`` then ``collect``."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._commands: Any = ctx.Queue()
        self._results: Any = ctx.Queue()
        self._process = ctx.Process(target=_load_main, args=(self._commands, self._results), daemon=True)
        self._pending: CaptionCommand | None = None

    def start(self, timeout_s: float = 60.0) -> CaptionLoad:
        self._process.start()
        try:
            self._results.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"caption load process did not start within {timeout_s:.0f} s") from None
        return self

    def begin(self, command: CaptionCommand) -> None:
        if self._pending is not None:
            raise RuntimeError("a caption command is already running")
        self._pending = command
        self._commands.put(command)

    def collect(self) -> CaptionLoadResult:
        command = self._pending
        if command is None:
            raise RuntimeError("no caption command is running")
        self._pending = None
        wait_s = command.end_at - time.monotonic() + command.timeout_s + 30.0
        kind, payload = self._results.get(timeout=max(1.0, wait_s))
        if kind == "failed":
            raise RuntimeError(f"caption load failed: {payload}")
        result: CaptionLoadResult = payload
        return result

    def stop(self) -> None:
        if self._process.is_alive():
            self._commands.put(None)
            self._process.join(10.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2.0)

