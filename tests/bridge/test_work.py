"""The Outbox's wake protocol under concurrency: producers queue replies and write the wake pipe at
most once until the I/O thread has taken it; no reply may wait for the I/O thread's poll timeout."""

from __future__ import annotations

import os
import select
import threading
import time

from bridge.work import Outbox, Work

POLL_TIMEOUT_MS = 1000  # what a lost wake-up would cost each reply it strands


def test_every_reply_wakes_the_consumer_promptly_with_coalesced_wakes() -> None:
    outbox = Outbox(1024)
    per_producer, producers = 25000, 2
    total = per_producer * producers
    put_at: dict[int, float] = {}
    latencies_s: list[float] = []
    wakes_seen = 0

    def produce(offset: int) -> None:
        for i in range(per_producer):
            rid = offset + i
            work = Work([b"c"], (b"c",), rid, "act", 0.0, None)
            put_at[rid] = time.perf_counter()
            outbox.success(work, {})
            if i % 64 == 0:
                time.sleep(0)  # let the consumer interleave anywhere

    def consume() -> None:  # as the server's I/O thread: poll the pipe, clear it, then drain
        nonlocal wakes_seen
        poller = select.poll()
        poller.register(outbox.wake_fd, select.POLLIN)
        received = 0
        while received < total:
            if poller.poll(POLL_TIMEOUT_MS):
                outbox.clear_wake()
                wakes_seen += 1
            for out in outbox.drain():
                assert out.work is not None
                latencies_s.append(time.perf_counter() - put_at[out.work.request_id])
                received += 1

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(k * per_producer,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    consumer.join(60)
    assert not consumer.is_alive()
    assert len(latencies_s) == total
    assert max(latencies_s) < 0.5 * POLL_TIMEOUT_MS / 1000, f"a reply waited {max(latencies_s):.3f} s for a wake-up"
    assert wakes_seen < total  # coalesced: far fewer pipe writes than replies


def test_replies_queued_while_the_consumer_is_away_write_the_pipe_once() -> None:
    outbox = Outbox(1024)
    for i in range(10):
        outbox.success(Work([b"c"], (b"c",), i, "act", 0.0, None), {})
    assert os.read(outbox.wake_fd, 4096) == b"\0"  # one byte for ten replies
    outbox.clear_wake()
    outbox.success(Work([b"c"], (b"c",), 10, "act", 0.0, None), {})  # taken: the next reply writes again
    assert os.read(outbox.wake_fd, 4096) == b"\0"
    assert len(outbox.drain()) == 11
    outbox.close()


def test_act_replies_drain_ahead_of_bulk_and_each_request_keeps_its_order() -> None:
    outbox = Outbox(1024)
    stream = Work([b"c"], (b"c",), 1, "caption", 0.0, None)
    for i in range(5):
        outbox.partial(stream, f"t{i}")
    act = Work([b"c"], (b"c",), 2, "act", 0.0, None)
    outbox.success(act, {})
    outbox.success(stream, {"caption": "t0t1t2t3t4"})
    items = outbox.drain()
    assert [out.work.request_id for out in items if out.work is not None] == [2, 1, 1, 1, 1, 1, 1]
    assert [out.final for out in items] == [True, False, False, False, False, False, True]
    outbox.close()
