"""Control latency with the real tiny models: `act` while 8 Moondream captions stream.

Bound stated and asserted: under load, the `act` round trip's p90 <= idle p90 + 30 ms and its
median <= idle median + 15 ms. Serving captions whole would instead make most `act`s wait for
entire captions (~150-200 ms of 8 x 64-token captions here), which this bound excludes. p90,
not p99, because a p99 of 100 samples on a shared 2-core machine is one host hiccup; the p99
figures (target <= 1.5x idle) are measured by `vtla-bridge bench control` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from bridge.aio_client import AsyncBridgeClient
from tests.conftest import StartServer

IMG = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)


async def act_latencies_ms(client: AsyncBridgeClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.act(image=IMG, instruction="pick up the cube")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def test_act_latency_while_8_captions_stream(start_server: StartServer) -> None:
    server = start_server(real_policy=True, real_generator=True, vlm={"options": {"max_sequences": 8}})

    async def run() -> tuple[list[float], list[float], int, int]:
        async with AsyncBridgeClient(server.endpoint, timeout_s=60) as client:
            await act_latencies_ms(client, 10)  # warm
            idle = await act_latencies_ms(client, 100)
            stop = asyncio.Event()
            chunks = 0
            captions = 0

            async def caption_forever() -> None:
                nonlocal chunks, captions
                while not stop.is_set():
                    async for _ in client.caption(IMG, "long", stream=True, settings={"max_tokens": 64}):
                        chunks += 1
                    captions += 1

            streams = [asyncio.ensure_future(caption_forever()) for _ in range(8)]
            await asyncio.sleep(0.3)
            steps_before = server.loop.state.counters["decode_steps"]
            busy = await act_latencies_ms(client, 100)
            steps_during = server.loop.state.counters["decode_steps"] - steps_before
            stop.set()
            await asyncio.gather(*streams)
            assert chunks > 0
            return idle, busy, steps_during, captions

    idle, busy, steps_during, captions = asyncio.run(run())
    idle_p50, idle_p90 = np.percentile(idle, [50, 90])
    busy_p50, busy_p90 = np.percentile(busy, [50, 90])
    print(f"act idle p50/p90 {idle_p50:.1f}/{idle_p90:.1f} ms, under load {busy_p50:.1f}/{busy_p90:.1f} ms, "
          f"{steps_during} decode steps, {captions} captions")
    assert steps_during > 20 and captions >= 8, "captions must be decoding while act is measured"
    assert busy_p90 <= idle_p90 + 30.0
    assert busy_p50 <= idle_p50 + 15.0
