"""Where one client's ``act`` round trip goes, hop by hop (a diagnosis tool, not a benchmark).

    python -m bench.request_hops [--rounds 400] [--batch-ms 0] [--frame 224] [--pause-ms 0]

Runs the real ``InferenceServer`` (benchmark null policy, optionally a flat ``--batch-ms``
forward) in a spawned process whose request path is wrapped with ``time.perf_counter_ns``
stamps, and one ``BridgeClient`` in this process. ``perf_counter`` is CLOCK_MONOTONIC on Linux,
one clock for both processes, so the client's send/receive stamps line up with the server's:

    client send → I/O recv → parsed+submitted → loop intake → forward start → forward end
    → reply queued → I/O drain → sent → client receive

The wrappers add about a microsecond per hop; the figures are p50 per hop in microseconds.
``--pause-ms`` makes the client sleep between requests, as a simulator steps between acts (and
as the rotating transport benchmark does): every hop then runs on cold caches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np

from bench.null_policy import NullPolicy
from bench.processes import NULL_POLICY_KIND, free_tcp_port

HOPS = ("recv", "submitted", "intake", "forward_start", "forward_end", "queued", "drained", "sent")


def _server_main(endpoint: str, batch_ms: float, ready: Any, stop: Any, out: Any) -> None:
    from bridge.config import config_from_mapping
    from bridge.inference_loop import InferenceLoop
    from bridge.server import InferenceServer
    from bridge.work import Outbox

    stamps: dict[int, dict[str, int]] = {}
    now = time.perf_counter_ns

    def stamp(rid: Any, hop: str) -> None:
        if isinstance(rid, int):
            stamps.setdefault(rid, {})[hop] = now()

    orig_on_message = InferenceServer._on_message
    orig_submit = InferenceLoop.submit
    orig_accept = InferenceLoop._accept
    orig_act = NullPolicy.act
    orig_put = Outbox._put
    orig_send = InferenceServer._send
    orig_wake = Outbox.wake
    orig_send_from_producer = InferenceServer._send_from_producer
    orig_drain = Outbox.drain_control  # an act's reply is in the control queue
    last_drain = [0]
    received_ns: list[int | None] = [None]  # I/O thread: when the message being handled arrived
    current: list[Any] = [None]  # loop thread: the request being served

    def on_message(self: Any, sock: Any, frames: Any) -> None:
        received_ns[0] = now()
        orig_on_message(self, sock, frames)

    def submit(self: Any, work: Any) -> None:
        if received_ns[0] is not None and isinstance(work.request_id, int):
            stamps.setdefault(work.request_id, {})["recv"] = received_ns[0]
        stamp(work.request_id, "submitted")
        orig_submit(self, work)

    def accept(self: Any, work: Any) -> None:
        stamp(work.request_id, "intake")
        current[0] = work.request_id
        orig_accept(self, work)

    def act(self: Any, batch: Any) -> Any:
        rid = current[0]
        stamp(rid, "forward_start")
        result = orig_act(self, batch)
        stamp(rid, "forward_end")
        return result

    def put(self: Any, work: Any, header: Any, final: bool) -> None:
        current[0] = work.request_id
        orig_put(self, work, header, final)

    def queued(rid: Any) -> None:  # the reply is queued: now it is sent here or the I/O thread woken
        if isinstance(rid, int):
            stamps.setdefault(rid, {}).setdefault("queued", now())

    def wake(self: Any) -> None:
        queued(current[0])
        orig_wake(self)

    def send_from_producer(self: Any) -> bool:
        queued(current[0])
        return bool(orig_send_from_producer(self))

    def drain(self: Any) -> Any:
        items = orig_drain(self)
        last_drain[0] = now()
        return items

    def send(self: Any, sock: Any, frames: Any) -> bool:
        ok = orig_send(self, sock, frames)
        # the reply's id is not at hand here: the one request in flight is the newest stamped
        if stamps:
            rid = max(stamps)
            stamps[rid].setdefault("drained", last_drain[0])
            stamps[rid].setdefault("sent", now())
        return ok

    InferenceServer._on_message = on_message  # type: ignore[method-assign]
    InferenceLoop.submit = submit  # type: ignore[method-assign]
    InferenceLoop._accept = accept  # type: ignore[method-assign]
    NullPolicy.act = act  # type: ignore[method-assign]
    Outbox._put = put  # type: ignore[method-assign]
    Outbox.drain_control = drain  # type: ignore[method-assign]
    InferenceServer._send = send  # type: ignore[method-assign]
    Outbox.wake = wake  # type: ignore[method-assign]
    InferenceServer._send_from_producer = send_from_producer  # type: ignore[method-assign]

    table = {
        "server": {"bind": endpoint},
        "policy": {"kind": NULL_POLICY_KIND, "options": {"batch_ms": batch_ms}},
        "vlm": {"enabled": False},
        "device": {"device": "cpu", "dtype": "float32"},
    }
    with InferenceServer(config_from_mapping(table)) as server:
        server.wait_ready(60)
        ready.set()
        stop.wait()
    out.put(stamps)


def run(rounds: int, batch_ms: float, frame_hw: int, warmup: int = 30, pause_ms: float = 0.0) -> dict[str, Any]:
    from bridge.client import BridgeClient

    ctx = mp.get_context("spawn")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_server_main, args=(endpoint, batch_ms, ready, stop, out), daemon=True)
    proc.start()
    if not ready.wait(120):
        proc.terminate()
        raise RuntimeError("server did not start")
    frame = np.random.default_rng(0).integers(0, 256, (frame_hw, frame_hw, 3), dtype=np.uint8)
    client_stamps: dict[int, tuple[int, int]] = {}
    with BridgeClient(endpoint, timeout_s=10) as client:
        client.hello()
        for _ in range(rounds + warmup):
            if pause_ms > 0:
                time.sleep(pause_ms / 1000.0)
            sent = time.perf_counter_ns()
            client.act(image=frame)
            received = time.perf_counter_ns()
            client_stamps[len(client_stamps)] = (sent, received)
    stop.set()
    server_stamps: dict[int, dict[str, int]] = out.get(timeout=30)
    proc.join(10)
    # server ids are the client's request ids in order; pair them by order
    ids = sorted(i for i, s in server_stamps.items() if all(h in s for h in HOPS))
    pairs = list(zip(ids[-rounds:], list(client_stamps.values())[-rounds:], strict=False))
    chain = ("client_send", *HOPS, "client_recv")
    deltas: dict[str, list[float]] = {f"{a}->{b}": [] for a, b in itertools.pairwise(chain)}
    total: list[float] = []
    for rid, (sent, received) in pairs:
        s = {"client_send": sent, **server_stamps[rid], "client_recv": received}
        for a, b in itertools.pairwise(chain):
            deltas[f"{a}->{b}"].append((s[b] - s[a]) / 1000.0)
        total.append((received - sent) / 1000.0)
    return {
        "rounds": len(pairs),
        "batch_ms": batch_ms,
        "pause_ms": pause_ms,
        "frame": [frame_hw, frame_hw, 3],
        "p50_us": {k: round(statistics.median(v), 1) for k, v in deltas.items()},
        "round_trip_p50_us": round(statistics.median(total), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--batch-ms", type=float, default=0.0)
    parser.add_argument("--frame", type=int, default=224)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="the client's sleep between requests")
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.batch_ms, args.frame, pause_ms=args.pause_ms), indent=2))


if __name__ == "__main__":
    main()
