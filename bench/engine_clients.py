"""Client processes for ``bench engine``: many closed-loop clients per process, one DEALER each.

Each simulated client has its own DEALER socket (its own identity, so the server's per-client
fairness sees it as a client); a process runs up to ~64 of them on one asyncio loop and one
ZeroMQ context, because 256 interpreters do not fit a small machine. Requests are encoded with
the project's codec (the frame travels as its own zero-copy part); replies are read with plain
msgpack (only ``id``, ``ok``, ``partial`` and ``timing`` are used).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.asyncio

from bench.frames import scene_frame
from bridge.codec import encode_message


@dataclass(frozen=True)
class ClientGroup:
    """``count`` clients of one kind in one process.

    kind: ``act`` (closed loop; ``depth`` requests in flight; ``rate_hz`` > 0: paced),
    ``caption`` (streaming captions back to back), ``vanish`` (start a streaming caption, and when
    every client of the group has its first chunk, close all sockets at once).
    """

    kind: str
    count: int
    endpoint: str
    start_at: float  # time.monotonic() of the first request, set when every process is ready
    warmup_s: float
    duration_s: float
    rate_hz: float = 0.0
    depth: int = 1
    length: str = "normal"
    frame_hw: tuple[int, int] = (224, 224)
    label: str = ""  # copied to the result, to tell groups of one kind apart
    nice: int = 0  # > 0: this process runs at a lower CPU priority (a load generator, not measured)


@dataclass
class GroupResult:
    kind: str
    label: str = ""
    completed: int = 0  # acts answered / captions finished inside the window
    tokens: int = 0  # streamed chunks inside the window
    latencies_ms: list[float] = field(default_factory=list)  # act round trips inside the window
    server_ms: list[float] = field(default_factory=list)  # the same acts' timing.server_ms (received -> reply made)
    errors: dict[str, int] = field(default_factory=dict)
    closed_at: float = 0.0  # vanish: time.monotonic() when the sockets were closed
    cpu_s: float = 0.0  # this client process's CPU time over the run (user + system)
    wall_s: float = 0.0  # the run's wall time in this process


def _decode(frames: list[bytes]) -> dict[str, Any]:
    header: dict[str, Any] = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
    return header


class _Window:
    def __init__(self, group: ClientGroup) -> None:
        self.start = group.start_at + group.warmup_s
        self.end = self.start + group.duration_s

    def inside(self, t: float) -> bool:
        return self.start <= t <= self.end


async def _act_client(sock: zmq.asyncio.Socket, group: ClientGroup, frame: np.ndarray, out: GroupResult) -> None:
    window, ids, sent_at = _Window(group), itertools.count(), {}
    period_s = 1.0 / group.rate_hz if group.rate_hz > 0 else 0.0
    next_send = group.start_at

    async def send() -> None:
        rid = next(ids)
        sent_at[rid] = time.monotonic()
        await sock.send_multipart([b"", *encode_message({"v": 1, "id": rid, "op": "act", "args": {"image": frame}})])

    for _ in range(group.depth):
        await send()
    while time.monotonic() < window.end:
        if not await sock.poll(200):
            continue
        reply = _decode(await sock.recv_multipart())
        now = time.monotonic()
        started = sent_at.pop(reply["id"], now)
        if not reply.get("ok"):
            code = reply["error"]["code"]
            out.errors[code] = out.errors.get(code, 0) + 1
        elif window.inside(now):
            out.completed += 1
            out.latencies_ms.append((now - started) * 1000.0)
            out.server_ms.append(float(reply.get("timing", {}).get("server_ms", float("nan"))))
        if period_s:
            next_send = max(now, next_send + period_s)
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
        await send()


def _caption_header(rid: int, frame: np.ndarray, length: str) -> dict[str, Any]:
    return {"v": 1, "id": rid, "op": "caption", "args": {"image": frame, "length": length, "stream": True}}


async def _caption_client(sock: zmq.asyncio.Socket, group: ClientGroup, frame: np.ndarray, out: GroupResult) -> None:
    window, ids = _Window(group), itertools.count()
    await sock.send_multipart([b"", *encode_message(_caption_header(next(ids), frame, group.length))])
    while time.monotonic() < window.end:
        if not await sock.poll(200):
            continue
        reply = _decode(await sock.recv_multipart())
        now = time.monotonic()
        if "partial" in reply:
            out.tokens += window.inside(now)
            continue
        if not reply.get("ok"):
            code = reply["error"]["code"]
            out.errors[code] = out.errors.get(code, 0) + 1
        else:
            out.completed += window.inside(now)
        await sock.send_multipart([b"", *encode_message(_caption_header(next(ids), frame, group.length))])


async def _vanish(socks: list[zmq.asyncio.Socket], group: ClientGroup, frame: np.ndarray, out: GroupResult) -> None:
    for rid, sock in enumerate(socks):
        await sock.send_multipart([b"", *encode_message(_caption_header(rid, frame, "long"))])
    for sock in socks:  # every client has its first chunk: all 32 are decoding
        while "partial" not in _decode(await sock.recv_multipart()):
            pass
    for sock in socks:
        sock.close(linger=0)
    out.closed_at = time.monotonic()


async def _run_group(group: ClientGroup, start: Any) -> GroupResult:
    ctx = zmq.asyncio.Context()
    out = GroupResult(group.kind, group.label)
    frame = scene_frame(*group.frame_hw, seed=0)
    socks = []
    for _ in range(group.count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(group.endpoint)
        socks.append(sock)
    start_at = await asyncio.get_running_loop().run_in_executor(None, start)  # every process is ready
    group = dataclasses.replace(group, start_at=start_at)
    await asyncio.sleep(max(0.0, group.start_at - time.monotonic()))
    cpu0_s, wall0_s = time.process_time(), time.monotonic()  # the run itself, from the common start
    try:
        if group.kind == "vanish":
            await _vanish(socks, group, frame, out)
        else:
            client = _act_client if group.kind == "act" else _caption_client
            await asyncio.gather(*(client(sock, group, frame, out) for sock in socks))
        out.cpu_s, out.wall_s = time.process_time() - cpu0_s, time.monotonic() - wall0_s
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
    return out


def _process_main(group: ClientGroup, results: Any, go: Any) -> None:
    def start() -> float:
        results.put(("ready", None))
        start_at: float = go.get()
        return start_at

    try:
        if group.nice > 0:
            os.nice(group.nice)
        results.put(("done", asyncio.run(_run_group(group, start))))
    except Exception as exc:  # reported to the parent, which raises
        results.put(("failed", f"{group.kind}: {type(exc).__name__}: {exc}"))


class ClientProcesses:
    """One process per group; ``run()`` starts them together once all are ready and collects results."""

    def __init__(self, groups: list[ClientGroup]) -> None:
        ctx = mp.get_context("spawn")
        self._results: Any = ctx.Queue()
        self._groups = groups
        self._go = [ctx.Queue() for _ in groups]
        self._processes = [
            ctx.Process(target=_process_main, args=(g, self._results, go), daemon=True)
            for g, go in zip(groups, self._go, strict=True)
        ]
        for process in self._processes:
            process.start()

    def run(self, ready_timeout_s: float, lead_s: float, timeout_s: float,
            on_start: Callable[[float], None] | None = None) -> list[GroupResult]:
        """Wait until every process has connected its sockets, start all at ``now + lead_s``
        (``on_start(start_at)`` is called then, e.g. to read the server's CPU time)."""
        out = []
        try:
            for _ in self._groups:
                kind, payload = self._results.get(timeout=ready_timeout_s)
                if kind == "failed":
                    raise RuntimeError(f"client process failed: {payload}")
            start_at = time.monotonic() + lead_s
            for go in self._go:
                go.put(start_at)
            if on_start is not None:
                on_start(start_at)
            for _ in self._groups:
                kind, payload = self._results.get(timeout=timeout_s)
                if kind == "failed":
                    raise RuntimeError(f"client process failed: {payload}")
                out.append(payload)
        finally:
            for process in self._processes:
                process.join(5.0)
                if process.is_alive():
                    process.terminate()
        return out


def split(total: int, per_process: int = 64) -> list[int]:
    """Client counts per process: ``total`` in chunks of at most ``per_process``."""
    return [min(per_process, total - i) for i in range(0, total, per_process)]
