"""The inference loop's scheduling: act between decode steps, streaming order, one final reply."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bridge.aio_client import AsyncBridgeClient
from bridge.client import BridgeClient, TextStream
from bridge.errors import BridgeError
from bridge.messages import Partial, Reply
from bridge.protocol import ErrorCode
from tests.conftest import StartServer
from tests.doubles import EchoPolicy, WordGenerator

IMG = np.zeros((8, 8, 3), np.uint8)


def test_stream_chunks_arrive_in_order_then_one_final(start_server: StartServer) -> None:
    server = start_server(generator=WordGenerator(words=6))
    with BridgeClient(server.endpoint) as client:
        stream = client.caption(IMG, "short", stream=True)
        assert isinstance(stream, TextStream)
        chunks = list(stream)
        assert chunks == [f"w{i} " for i in range(1, 7)]
        assert stream.result is not None and stream.result.text == "".join(chunks)
        assert stream.result.finish_reason == "stop"
        events = list(client.stream("query", {"image": IMG, "question": "what?"}))
        assert [type(e) for e in events] == [Partial] * 6 + [Reply]


def test_max_tokens_and_non_streaming_replies(start_server: StartServer) -> None:
    server = start_server(generator=WordGenerator(words=10))
    with BridgeClient(server.endpoint) as client:
        result = client.query(IMG, "what?", settings={"max_tokens": 3})
        assert result.text == "w1 w2 w3 " and result.finish_reason == "length"
        assert client.detect(IMG, "cup").items == [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]
        assert client.point(IMG, "cup").items == [{"x": 0.5, "y": 0.25}]
        for text in ("refuse", "refuse early"):  # InputError from admit() and from prepare()
            with pytest.raises(BridgeError) as info:
                client.query(IMG, text)
            assert info.value.code == ErrorCode.BAD_REQUEST and f"refuses '{text}'" in info.value.message


def test_sequences_decode_together_and_wait_for_free_slots(start_server: StartServer) -> None:
    generator = WordGenerator(slots=3, words=4, step_s=0.01)
    server = start_server(generator=generator)

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint) as client:
            results = await asyncio.gather(*(client.caption(IMG) for _ in range(7)))
            assert all(r.text == "w1 w2 w3 w4 " for r in results)
            assert max(r.timing["batch_size"] for r in results) == 3

    asyncio.run(run())
    assert generator.max_active == 3
    assert generator.steps < 7 * 4  # steps were shared between sequences


def test_act_waits_at_most_about_one_decode_step(start_server: StartServer) -> None:
    step_s = 0.05
    server = start_server(policy=EchoPolicy(), generator=WordGenerator(slots=8, step_s=step_s, words=40))

    async def run() -> list[float]:
        async with AsyncBridgeClient(server.endpoint, timeout_s=30) as client:
            captions = [asyncio.ensure_future(client.caption(IMG)) for _ in range(8)]
            await asyncio.sleep(0.3)  # captions are decoding now (40 steps of 50 ms)
            latencies = []
            for _ in range(10):
                t0 = time.perf_counter()
                await client.act(image=IMG)
                latencies.append((time.perf_counter() - t0) * 1000)
            assert not any(c.done() for c in captions)  # act did not wait for a whole caption
            await asyncio.gather(*captions)
            return latencies

    latencies = asyncio.run(run())
    # an act arriving mid-step waits for that step (<= 50 ms) plus its own tiny forward; waiting
    # for whole captions would take 2 s. Median and p90, so one host hiccup cannot fail it.
    assert np.median(latencies) < step_s * 1000 + 30, latencies
    assert np.percentile(latencies, 90) < step_s * 1000 * 2 + 50, latencies


def test_expired_generation_requests_are_not_started(start_server: StartServer) -> None:
    server = start_server(generator=WordGenerator(slots=1, step_s=0.05, words=6))

    async def run() -> None:
        async with AsyncBridgeClient(server.endpoint) as client:
            first = asyncio.ensure_future(client.caption(IMG))
            await asyncio.sleep(0.05)
            with pytest.raises(BridgeError) as info:
                await client.call("caption", {"image": IMG}, deadline_ms=20)
            assert info.value.code == ErrorCode.DEADLINE_EXCEEDED
            assert (await first).text.startswith("w1")

    asyncio.run(run())


def test_reset_reaches_the_policy(start_server: StartServer) -> None:
    policy = EchoPolicy()
    server = start_server(policy=policy)
    with BridgeClient(server.endpoint) as client:
        client.reset("episode-7")
        client.reset()
    assert policy.resets == ["episode-7", None]


def test_shutdown_answers_in_flight_work(start_server: StartServer) -> None:
    server = start_server(policy=EchoPolicy(delay_s=0.2))

    async def run() -> list[object]:
        async with AsyncBridgeClient(server.endpoint, timeout_s=10) as client:
            pending = [asyncio.ensure_future(client.act(image=IMG)) for _ in range(3)]
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            stopping = loop.run_in_executor(None, server.stop)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            await stopping
            return outcomes

    outcomes = asyncio.run(run())
    for outcome in outcomes:  # answered, or failed with a retryable error: never left hanging
        assert not isinstance(outcome, BaseException) or (
            isinstance(outcome, BridgeError) and outcome.code == ErrorCode.MODEL_UNAVAILABLE)
    assert any(not isinstance(o, BaseException) for o in outcomes)


class ExplodingPolicy(EchoPolicy):
    def act(self, batch):  # type: ignore[no-untyped-def]
        if any(obs.instruction == "explode" for obs in batch):
            raise RuntimeError("secret internal detail")
        return super().act(batch)


def test_model_exception_is_internal_and_the_server_goes_on(start_server: StartServer) -> None:
    server = start_server(policy=ExplodingPolicy())
    with BridgeClient(server.endpoint) as client:
        with pytest.raises(BridgeError) as info:
            client.act(image=IMG, instruction="explode")
        assert info.value.code == ErrorCode.INTERNAL and info.value.retryable
        assert "secret" not in info.value.message  # details go to the log, not to clients
        assert client.act(image=IMG, instruction="fine").action[1] == 4
        assert client.health()["status"] == "ok"
