"""The inference loop's policy at GPU timing: real sockets, the real loop, the ``simulated`` models.

The simulated models wait (GIL released) for the H200 time of the real models' units, so these
tests exercise the scheduling policy, cancellation and deadlines as they behave on a GPU. Where a
test needs long generation units it raises the simulated kernel launch cost (``slow_units``).
Latency bounds are on the server's own ``timing`` (no client-side noise) and on p90s, with slack
for host hiccups on a shared machine; structural facts (counts, codes, freed slots) are exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from bridge.client import BridgeClient
from bridge.protocol import ErrorCode
from bridge.server import InferenceServer
from models import model_kinds
from models.interfaces import GenerationEvent, ReadyWork
from tests.bridge.raw import RawDealer, ndarray
from tests.conftest import server_config

SMALL = np.zeros((64, 64, 3), np.uint8)
SLOW_UNITS = {"device": {"kernel_launch_us": 100.0}}  # every generation unit ~28-35 ms
SLOW_STEPS = {"device": {"kernel_launch_us": 1000.0}}  # every generation unit ~0.3 s: an act (6 ms) fits in one


StartSim = Callable[..., InferenceServer]


@pytest.fixture
def start_sim() -> Iterator[StartSim]:
    """Start servers of both simulated presets (config sections as keyword arguments); stopped at teardown."""
    servers: list[InferenceServer] = []

    def start(vlm_options: dict[str, Any] | None = None, wrap_generator: Callable[[Any], Any] | None = None,
              **sections: Any) -> InferenceServer:
        config = server_config(
            policy={"kind": "simulated", "preset": "nano-2b-h200"},
            vlm={"kind": "simulated", "preset": "moondream2-h200", "options": vlm_options or {}},
            **sections,
        )
        if wrap_generator is None:
            server = InferenceServer(config)
        else:
            server = InferenceServer(config, load_generator=lambda *a: wrap_generator(model_kinds.load_generator(*a)))
        server.start()
        servers.append(server)
        assert server.wait_ready(60), server.loop.state.detail
        return server

    yield start
    for server in servers:
        server.stop()


def act(rid: Any, image: np.ndarray = SMALL, **args: Any) -> dict[str, Any]:
    return {"v": 1, "id": rid, "op": "act", "args": {"image": ndarray(image), **args}}


def caption(rid: Any, image: np.ndarray = SMALL, length: str = "short", **extra: Any) -> dict[str, Any]:
    settings = extra.pop("settings", {})
    return {"v": 1, "id": rid, "op": "caption",
            "args": {"image": ndarray(image), "length": length, "stream": True, "settings": settings}, **extra}


def final_of(dealer: RawDealer, rid: Any, timeout_s: float = 20.0) -> tuple[dict[str, Any], int]:
    """Read until the final reply of ``rid`` -> (final, partials of rid seen); other ids are skipped."""
    partials = 0
    end_s = time.monotonic() + timeout_s
    while time.monotonic() < end_s:
        reply = dealer.recv(int(max(1.0, end_s - time.monotonic()) * 1000))
        if reply["id"] != rid:
            continue
        if "partial" in reply:
            partials += 1
            continue
        return reply, partials
    raise AssertionError(f"no final reply for {rid!r}")


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    end_s = time.monotonic() + timeout_s
    while time.monotonic() < end_s:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


class Flooder:
    """One client keeping ``depth`` acts in flight as fast as the server answers."""

    def __init__(self, ctx: zmq.Context, endpoint: str, depth: int) -> None:
        self.dealer = RawDealer(ctx, endpoint)
        self.depth = depth
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sent = 0
        for _ in range(self.depth):
            self.dealer.send(act(f"f{sent}"))
            sent += 1
        while not self.stop.is_set():
            if not self.dealer.sock.poll(200):
                continue
            self.dealer.sock.recv_multipart()
            self.answered += 1
            self.dealer.send(act(f"f{sent}"))
            sent += 1

    def __enter__(self) -> Flooder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.dealer.close()


@pytest.fixture
def ctx() -> Any:
    context = zmq.Context()
    yield context
    context.term()


def test_simulated_models_say_so_and_return_shaped_outputs(start_sim: StartSim) -> None:
    server = start_sim()
    with BridgeClient(server.endpoint, timeout_s=20) as client:
        hello = client.hello()
        assert "cancel" in hello["ops"]
        for name in ("vtla", "moondream"):
            entry = hello["models"][name]
            assert entry["simulated"] is True and entry["kind"] == "simulated"
            assert entry["simulation"]["device"] == "NVIDIA H200 SXM"
        health = client.health()
        assert all(m["simulated"] for m in health["models"].values())
        result = client.act(image=SMALL, tactile={"force_torque": np.zeros(6, np.float32)})
        chunk = hello["models"]["vtla"]["action"]["chunk_size"]
        assert result.actions.shape == (chunk, 7) and result.actions.dtype == np.float32
        assert result.timing["bucket"] == 1
        chunks = list(client.caption(SMALL, "short", stream=True))
        assert len(chunks) == 20 and chunks[0] == "tok1 "  # the preset's short caption: 20 tokens
        assert client.query(SMALL, "what?", settings={"max_tokens": 5}).finish_reason == "length"
        boxes = client.detect(SMALL, "cube").items
        assert len(boxes) == 2 and all(0 <= b["x_min"] < b["x_max"] <= 1 for b in boxes)
        assert len(client.point(SMALL, "cube").items) == 2


def test_generation_progresses_while_acts_saturate_the_loop(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(server={"max_inflight_per_client": 64})
    captioner = RawDealer(ctx, server.endpoint)
    try:
        with Flooder(ctx, server.endpoint, depth=64) as flooder:
            assert wait_until(lambda: flooder.answered > 64)  # acts are waiting all the time now
            acts_before = server.loop.state.counters["act_requests"]
            captioner.send(caption("c1", length="long"))  # ~0.2 s of generation units
            final, partials = final_of(captioner, "c1", timeout_s=30)
            acts_during = server.loop.state.counters["act_requests"] - acts_before
            assert wait_until(lambda: flooder.answered > acts_during + 64)  # still saturating afterwards
        assert final["ok"] and partials == 150  # the long caption: 150 tokens, one chunk each
        # acts first, never alone: act batches (64 rows, ~0.28 s each) and generation units interleaved
        assert acts_during >= 128, acts_during
    finally:
        captioner.close()


def test_act_waits_at_most_one_generation_unit(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_UNITS)
    generator: Any = server.loop.generator
    unit_ms = max(generator.decode_ms([800] * 4), generator.crops_ms(1), generator.prefill_ms(256, 743))
    captioner, polite = RawDealer(ctx, server.endpoint), RawDealer(ctx, server.endpoint)
    try:
        for i in range(4):
            captioner.send(caption(f"c{i}", length="long"))
        assert wait_until(lambda: generator.ready().decoding >= 1)
        queue_ms = []
        for i in range(25):
            reply = polite.request(act(i), timeout_ms=10_000)
            assert reply["ok"]
            queue_ms.append(reply["timing"]["queue_ms"])
            time.sleep(0.005)
        assert generator.ready().any, "generation was running during the measurement"
    finally:
        captioner.close()
        polite.close()
    p50, p90 = np.percentile(queue_ms, [50, 90])
    assert p50 <= unit_ms + 5.0, (p50, unit_ms)
    assert p90 <= unit_ms + 15.0, (p90, unit_ms)


def _cancel_and_check(server: InferenceServer, dealer: RawDealer, rid: str) -> None:
    dealer.send({"v": 1, "id": "x", "op": "cancel", "args": {"id": rid}})
    cancel_reply, _ = final_of(dealer, "x")
    assert cancel_reply["ok"] and cancel_reply["result"] == {"cancelled": True}
    final, _ = final_of(dealer, rid)
    assert not final["ok"] and final["error"]["code"] == ErrorCode.CANCELLED
    assert final["error"]["retryable"] is False


def test_cancel_of_a_decoding_request_frees_its_slot(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_UNITS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    try:
        dealer.send(caption("c1", length="long"))
        first = dealer.recv(10_000)
        assert first["id"] == "c1" and "partial" in first  # decoding now
        _cancel_and_check(server, dealer, "c1")
        assert wait_until(lambda: generator.free_slots() == 32 and not generator.ready().any, 2.0)
        assert server.loop.state.counters["generation_cancelled"] == 1
        unknown = dealer.request({"v": 1, "id": "y", "op": "cancel", "args": {"id": "c1"}})
        assert unknown["result"] == {"cancelled": False}  # nothing of that id is pending any more
        bad = dealer.request({"v": 1, "id": "z", "op": "cancel", "args": {}})
        assert bad["error"]["code"] == ErrorCode.BAD_REQUEST
    finally:
        dealer.close()


def test_cancel_of_a_queued_request(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options={**SLOW_UNITS, "workload": {"max_sequences": 1}})
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    try:
        dealer.send(caption("busy", length="long"))
        assert wait_until(lambda: generator.free_slots() == 0)
        dealer.send(caption("queued"))
        assert wait_until(lambda: len(server.loop.policy.generation) == 1)
        _cancel_and_check(server, dealer, "queued")
        # the reply may be sent by the loop before it prunes its queue: wait for the loop's state
        assert wait_until(lambda: len(server.loop.policy.generation) == 0, 2.0)
        assert generator.free_slots() == 0  # "busy" runs on
        _cancel_and_check(server, dealer, "busy")
        assert wait_until(lambda: generator.free_slots() == 1, 2.0)
    finally:
        dealer.close()


def test_cancel_of_an_admitting_request(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_UNITS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    big = np.zeros((1200, 1600, 3), np.uint8)  # 13 crops: 13 encode units + 3 prefill units
    try:
        dealer.send(caption("adm", image=big))
        assert wait_until(lambda: generator.ready().admitting == 1)
        _cancel_and_check(server, dealer, "adm")
        assert wait_until(lambda: generator.ready() == ReadyWork() and generator.free_slots() == 32, 2.0)
    finally:
        dealer.close()


def test_deadline_passing_during_decode_ends_the_request(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_UNITS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    try:
        dealer.send(caption("d1", length="long", deadline_ms=400.0))  # ~150 tokens x ~30 ms: far longer
        final, partials = final_of(dealer, "d1")
        assert not final["ok"] and final["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED
        assert "during generation" in final["error"]["message"] and partials >= 1
        assert wait_until(lambda: generator.free_slots() == 32, 2.0)
    finally:
        dealer.close()


def test_a_vanished_streaming_client_frees_its_slot(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_UNITS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    dealer.send(caption("gone", length="long"))
    first = dealer.recv(10_000)
    assert "partial" in first
    steps_at_close = server.loop.state.counters["decode_steps"]
    dealer.close()  # the client vanishes mid-caption
    assert wait_until(lambda: generator.free_slots() == 32, 5.0)
    steps_to_free = server.loop.state.counters["decode_steps"] - steps_at_close
    assert server.loop.state.counters["generation_cancelled"] == 1
    # detectable when the next chunk cannot be delivered (the disconnect takes a moment to reach
    # the ROUTER); then the slot is free before the following decode step
    assert steps_to_free <= 6, steps_to_free


def test_a_polite_client_is_not_pushed_back_by_a_flooder(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(batching={"max_batch": 8}, server={"max_inflight_per_client": 64})
    policy: Any = server.loop._policy
    batch_ms = policy.forward_ms(8)
    polite = RawDealer(ctx, server.endpoint)
    queue_ms = []
    try:
        with Flooder(ctx, server.endpoint, depth=64) as flooder:
            assert wait_until(lambda: flooder.answered > 64)
            for i in range(20):
                reply = polite.request(act(i), timeout_ms=10_000)
                assert reply["ok"]
                queue_ms.append(reply["timing"]["queue_ms"])
                time.sleep(0.02)
    finally:
        polite.close()
    # round-robin per client: the polite act rides in the next batch (FIFO: behind 64 / 8 = 8 batches)
    p50, p90 = np.percentile(queue_ms, [50, 90])
    assert p50 <= batch_ms + 5.0, (p50, batch_ms)
    assert p90 <= batch_ms * 1.5 + 15.0, (p90, batch_ms)


def test_mixed_frame_sizes_and_optional_inputs_share_one_forward(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(batching={"max_batch": 8})
    dealers = [RawDealer(ctx, server.endpoint) for _ in range(6)]
    variants = [
        act(0, np.zeros((64, 64, 3), np.uint8)),
        act(1, np.zeros((480, 640, 3), np.uint8)),
        act(2, np.zeros((224, 224, 3), np.uint8), tactile={"force_torque": ndarray(np.zeros(6, np.float32))}),
        act(3, np.zeros((384, 384, 3), np.uint8)),
        act(4, np.zeros((100, 300, 3), np.uint8), tactile={"force_torque": ndarray(np.ones(6, np.float32))}),
        act(5, np.zeros((64, 64, 3), np.uint8)),
    ]
    try:
        blocker = RawDealer(ctx, server.endpoint)  # a forward in progress lets the six queue up
        blocker.send(act("b"))
        for dealer, header in zip(dealers, variants, strict=True):
            dealer.send(header)
        replies = [d.recv(10_000) for d in dealers]
        blocker.recv(10_000)
        blocker.close()
    finally:
        for d in dealers:
            d.close()
    assert all(r["ok"] for r in replies)
    sizes = [r["timing"]["batch_size"] for r in replies]
    assert max(sizes) >= 4, sizes  # frames of five sizes, with and without touch, in one forward
    assert {r["timing"]["bucket"] for r in replies if r["timing"]["batch_size"] == max(sizes)} <= {4, 8}
    first = replies[0]["result"]["actions"]
    assert all(np.allclose(r["result"]["actions"], first, atol=1e-6) for r in replies)


# ---------------------------------------------------------------- overlap: acts beside a launched decode step


def _mixed_load(server: InferenceServer, ctx: zmq.Context) -> tuple[list[Any], list[Any]]:
    """Three streaming captions and twelve acts from four clients at once -> (caption finals + chunks, act results)."""
    captioners = [RawDealer(ctx, server.endpoint) for _ in range(3)]
    actors = [RawDealer(ctx, server.endpoint) for _ in range(4)]
    try:
        for i, dealer in enumerate(captioners):
            dealer.send(caption(f"c{i}", length=("short", "normal", "long")[i]))
        acts = []
        for round_ in range(3):
            for i, dealer in enumerate(actors):
                dealer.send(act(f"a{round_}-{i}", image=np.full((64, 64, 3), 10 * i, np.uint8)))
            for dealer in actors:
                reply = dealer.recv(20_000)
                assert reply["ok"], reply
                acts.append((reply["id"], reply["result"]["actions"]))
        captions = []
        for dealer in captioners:
            chunks = []
            while True:
                reply = dealer.recv(30_000)
                if "partial" in reply:
                    chunks.append(reply["partial"]["chunk"])
                    continue
                assert reply["ok"], reply
                captions.append((reply["result"]["caption"], reply["result"]["finish_reason"], "".join(chunks)))
                break
    finally:
        for d in captioners + actors:
            d.close()
    return captions, sorted(acts, key=lambda item: item[0])


def test_overlap_on_gives_the_same_replies_and_tokens_as_off(start_sim: StartSim, ctx: zmq.Context) -> None:
    results = {}
    for overlap in (False, True):
        server = start_sim(scheduler={"overlap": overlap})
        assert server.loop.policy.overlap is overlap
        results[overlap] = _mixed_load(server, ctx)
        with BridgeClient(server.endpoint, timeout_s=20) as client:
            results[overlap] += (client.query(SMALL, "what?").text, client.detect(SMALL, "cube").items)
    off, on = results[False], results[True]
    assert [c[0] for c in on[0]] == [c[0] for c in off[0]]  # caption texts
    assert [c[1] for c in on[0]] == [c[1] for c in off[0]] == ["stop"] * 3
    assert all(text == chunks for text, _, chunks in on[0])  # the streamed chunks add up to the final
    assert len(on[0][2][0].split()) == 150  # the long caption: every token
    assert [a[0] for a in on[1]] == [a[0] for a in off[1]]
    assert all(np.allclose(x[1], y[1], atol=1e-6) for x, y in zip(on[1], off[1], strict=True))
    assert on[2:] == off[2:]


def _act_during_a_step(server: InferenceServer, ctx: zmq.Context) -> tuple[list[str], dict[str, Any]]:
    """On one DEALER (replies arrive in the order the server produced them): a streaming caption,
    then, while a decode step runs, an act -> the order of the replies after the act was sent."""
    dealer = RawDealer(ctx, server.endpoint)
    try:
        dealer.send(caption("c", length="short"))
        first = dealer.recv(20_000)
        assert "partial" in first  # the prefill's token: decode steps (~0.3 s each) follow
        second = dealer.recv(20_000)
        assert "partial" in second  # a decode step just finished and the next is launched
        time.sleep(0.05)  # well inside that next step
        dealer.send(act("a"))
        order, act_reply = [], {}
        while not act_reply:
            reply = dealer.recv(20_000)
            order.append("act" if reply["id"] == "a" else "chunk")
            if reply["id"] == "a":
                act_reply = reply
        dealer.send({"v": 1, "id": "x", "op": "cancel", "args": {"id": "c"}})
        final_of(dealer, "c")
    finally:
        dealer.close()
    return order, act_reply


def test_an_act_issued_during_a_launched_step_completes_before_the_step(start_sim: StartSim,
                                                                        ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_STEPS)
    order, reply = _act_during_a_step(server, ctx)
    assert reply["ok"] and order == ["act"], order  # no chunk of the step in flight came first
    assert wait_until(lambda: server.loop.state.counters["decode_steps_overlapped"] >= 1)


def test_without_overlap_the_act_waits_for_the_step(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_STEPS, scheduler={"overlap": False})
    order, reply = _act_during_a_step(server, ctx)
    assert reply["ok"] and order[0] == "chunk", order  # the step in flight finished first
    assert server.loop.state.counters["decode_steps_overlapped"] == 0


def test_cancel_with_a_step_in_flight_ends_the_request_before_the_step(start_sim: StartSim,
                                                                       ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_STEPS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    try:
        dealer.send(caption("c", length="long"))
        assert "partial" in dealer.recv(20_000) and "partial" in dealer.recv(20_000)
        steps = server.loop.state.counters["decode_steps"]
        time.sleep(0.05)  # inside the next step
        dealer.send({"v": 1, "id": "x", "op": "cancel", "args": {"id": "c"}})
        replies = []
        while not any(r["id"] == "c" and "partial" not in r for r in replies):
            replies.append(dealer.recv(20_000))
        final = replies[-1]
        assert not final["ok"] and final["error"]["code"] == ErrorCode.CANCELLED
        assert not any("partial" in r for r in replies)  # ended before the step in flight finished
        assert server.loop.state.counters["decode_steps"] <= steps + 1
        assert wait_until(lambda: generator.free_slots() == 32 and not generator.ready().any, 5.0)
        assert wait_until(lambda: server.loop.state.counters["decode_steps"] <= steps + 1
                          and not server.loop.decode_step_in_flight, 5.0)  # the step in flight was finished, no more
    finally:
        dealer.close()


def test_deadline_with_steps_in_flight(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(vlm_options=SLOW_STEPS)
    generator: Any = server.loop.generator
    dealer = RawDealer(ctx, server.endpoint)
    try:
        # admission ~1.4 s (2 crops, 3 prefill chunks), then 150 steps of ~0.3 s: the deadline passes while decoding
        dealer.send(caption("d", length="long", deadline_ms=2500.0))
        final, partials = final_of(dealer, "d")
        assert not final["ok"] and final["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED
        assert "during generation" in final["error"]["message"] and 1 <= partials <= 8
        assert wait_until(lambda: generator.free_slots() == 32, 5.0)
    finally:
        dealer.close()


class _NoSplit:
    """A generator without launch/finish: every attribute but those of the wrapped one."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("launch_decode_step", "finish_decode_step", "decode_step_done"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class _NoQuery(_NoSplit):
    """launch/finish, but no decode_step_done(): one act batch beside a step, then it is finished."""

    def launch_decode_step(self) -> None:
        self._inner.launch_decode_step()

    def finish_decode_step(self) -> list[GenerationEvent]:
        events: list[GenerationEvent] = self._inner.finish_decode_step()
        return events


@pytest.mark.parametrize("wrap", [_NoSplit, _NoQuery])
def test_generators_without_the_split_or_the_query_still_serve(start_sim: StartSim, ctx: zmq.Context,
                                                               wrap: type) -> None:
    server = start_sim(wrap_generator=wrap)
    assert server.loop.policy.overlap is (wrap is _NoQuery)
    captions, acts = _mixed_load(server, ctx)
    assert [c[1] for c in captions] == ["stop"] * 3 and len(acts) == 12
    assert [len(c[0].split()) for c in captions] == [20, 60, 150]
    overlapped = server.loop.state.counters["decode_steps_overlapped"]
    assert overlapped == 0 if wrap is _NoSplit else overlapped >= 0


class _SyncLaunch(_NoQuery):
    """A launch that computes the step before it returns (as on CPU), with the query."""

    def launch_decode_step(self) -> None:
        self._inner.launch_decode_step()
        while not self._inner.decode_step_done():
            time.sleep(0.0002)

    def decode_step_done(self) -> bool:
        done: bool = self._inner.decode_step_done()
        return done


def test_synchronous_launches_are_not_put_in_front_of_acts(start_sim: StartSim, ctx: zmq.Context) -> None:
    server = start_sim(wrap_generator=_SyncLaunch)
    assert server.loop.policy.overlap and server.loop.policy.launch_beside_acts
    captions, acts = _mixed_load(server, ctx)
    assert [c[1] for c in captions] == ["stop"] * 3 and len(acts) == 12
    assert not server.loop.policy.launch_beside_acts  # seen done right after its launches: old order


def _periodic_acts_beside_captions(server: InferenceServer, ctx: zmq.Context, duration_s: float = 1.5) -> int:
    """A 50 Hz act client (on a clock) next to 8 caption streams restarted as they finish -> acts answered."""
    stop = threading.Event()

    def captions() -> None:
        dealer = RawDealer(ctx, server.endpoint)
        try:
            ids = iter(range(1_000_000))
            for _ in range(8):
                dealer.send(caption(next(ids), length="short"))
            while not stop.is_set():
                if dealer.sock.poll(100) and "partial" not in (reply := dealer.recv()):
                    assert reply["ok"], reply
                    dealer.send(caption(next(ids), length="short"))
        finally:
            dealer.close()

    streams = threading.Thread(target=captions)
    streams.start()
    answered = 0
    try:
        with BridgeClient(server.endpoint, timeout_s=5) as client:
            next_s = time.perf_counter()
            end_s = next_s + duration_s
            while next_s < end_s:
                next_s += 0.02
                time.sleep(max(0.0, next_s - time.perf_counter()))
                assert client.act(image=SMALL).actions.shape[1] == 7
                answered += 1
    finally:
        stop.set()
        streams.join(10)
    return answered


def test_admission_units_are_put_after_a_decode_step_when_a_periodic_act_is_due(start_sim: StartSim,
                                                                                ctx: zmq.Context) -> None:
    server = start_sim()
    assert _periodic_acts_beside_captions(server, ctx) >= 50
    counters = server.loop.state.counters
    assert counters["admissions_deferred"] >= 1 and counters["admission_units"] > counters["admissions_deferred"]
    off = start_sim(scheduler={"anticipation_share": 0.0})  # anticipation off: admission is never deferred
    _periodic_acts_beside_captions(off, ctx, duration_s=0.5)
    assert off.loop.state.counters["admissions_deferred"] == 0 and off.loop.state.counters["admission_units"] > 0
