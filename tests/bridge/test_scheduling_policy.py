"""The scheduling policy alone (no sockets): shares, re-entry, round-robin, the batch time budget."""

from __future__ import annotations

from bridge.scheduling_policy import Decision, SchedulingPolicy, Unit, bucket_size
from bridge.work import Work
from models.interfaces import ReadyWork


def work(client: bytes, rid: int) -> Work:
    return Work([client], (client,), rid, "act", 0.0, None)


def test_generation_gets_its_share_of_loop_time_while_acts_saturate() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5)
    used = {Unit.ACT: 0.0, Unit.DECODE: 0.0, Unit.ADMISSION: 0.0}
    for i in range(2000):
        policy.acts.push(work(b"a", i))
        decision = policy.schedule(ReadyWork(admitting=1, decoding=1))
        cost_s = 0.005 if decision.unit is Unit.ACT else 0.001
        used[decision.unit] += cost_s
        policy.charge(decision, cost_s)
    total = sum(used.values())
    generation = (used[Unit.DECODE] + used[Unit.ADMISSION]) / total
    assert abs(generation - 0.3) < 0.02, generation
    assert abs(used[Unit.ADMISSION] - used[Unit.DECODE]) / total < 0.02  # admission_share 0.5


def test_an_act_arriving_after_a_long_idle_goes_first_whatever_the_history() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5)
    for i in range(100):  # acts alone for a long time: their virtual time runs far ahead
        policy.acts.push(work(b"a", i))
        policy.charge(policy.schedule(ReadyWork()), 0.1)
    for _ in range(10):  # then generation alone
        decision = policy.schedule(ReadyWork(decoding=1))
        assert decision.unit is Unit.DECODE
        policy.charge(decision, 0.001)
    policy.acts.push(work(b"a", 999))  # an act arrives: it waits for no more than the unit in progress
    assert policy.schedule(ReadyWork(decoding=1)).unit is Unit.ACT


def test_act_batches_take_one_request_per_client_per_round() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5)
    for i in range(10):
        policy.acts.push(work(b"flood", i))
    policy.acts.push(work(b"polite", 0))
    first = policy.schedule(ReadyWork())
    assert [w.client for w in first.batch].count((b"polite",)) == 1  # in the very next batch
    assert len(first.batch) == 4
    policy.acts.queues.clear()
    clients = [work(bytes([c]), 0) for c in range(6)]
    for w in clients:
        policy.acts.push(w)
    a = policy.schedule(ReadyWork()).batch
    b = policy.schedule(ReadyWork()).batch
    assert {w.client for w in a} | {w.client for w in b} == {w.client for w in clients}  # nobody waits 2 batches


def test_the_batch_time_budget_keeps_one_row_per_waiting_client() -> None:
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=12.0)
    policy.forward_ms.update({1: 5.7, 2: 10.1, 3: 14.5})
    for i in range(64):
        policy.acts.push(work(b"flood", i))
    assert policy.row_limit() == 2  # 3 rows would take 14.5 ms
    for c in range(10):
        policy.acts.push(work(bytes([c]), 0))
    assert policy.row_limit() == 11  # but every waiting client gets its row
    assert [bucket_size(n, 64) for n in (1, 3, 5, 33, 64)] == [1, 4, 8, 64, 64]


def test_overlap_launches_a_decode_step_beside_the_acts_turn() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5, overlap=True)
    policy.acts.push(work(b"a", 0))
    decision = policy.schedule(ReadyWork(decoding=3))
    assert decision.unit is Unit.ACT and decision.launch_decode  # acts first, a step in flight beside them
    policy.acts.push(work(b"a", 1))
    assert not policy.schedule(ReadyWork(admitting=1)).launch_decode  # nothing decoding: nothing to launch
    plain = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5)
    plain.acts.push(work(b"a", 0))
    assert not plain.schedule(ReadyWork(decoding=3)).launch_decode  # overlap off


def test_with_a_step_in_flight_only_acts_or_finish() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5, overlap=True)
    assert policy.schedule(ReadyWork(admitting=2, decoding=2), step_in_flight=True).unit is Unit.FINISH_DECODE
    policy.acts.push(work(b"a", 0))  # an act arrives during a generation step: re-enters level, goes first
    decision = policy.schedule(ReadyWork(admitting=2, decoding=2), step_in_flight=True)
    assert decision.unit is Unit.ACT and not decision.launch_decode and len(decision.batch) == 1


def test_overlapped_steps_come_on_top_of_generations_share() -> None:
    # acts saturate; each launched step is charged only its own loop time (here 0.2 ms), the
    # act batches beside it their forward time: generation still gets its 30 % of loop time
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5, overlap=True)
    own = {Unit.ACT: 0.0, Unit.DECODE: 0.0}
    steps = 0
    in_flight = False
    for i in range(3000):
        policy.acts.push(work(b"a", i))
        decision = policy.schedule(ReadyWork(decoding=4), step_in_flight=in_flight)
        if decision.unit is Unit.ACT:
            if decision.launch_decode:
                in_flight = True
            policy.charge(decision, 0.005)
            own[Unit.ACT] += 0.005
            if in_flight:  # done beside the act: finished next, charged its own 0.2 ms
                policy.charge(Decision(Unit.DECODE), 0.0002)
                own[Unit.DECODE] += 0.0002
                in_flight, steps = False, steps + 1
        else:
            assert decision.unit in (Unit.DECODE, Unit.FINISH_DECODE)
            policy.charge(Decision(Unit.DECODE), 0.001)  # a step alone
            own[Unit.DECODE] += 0.001
            steps += 1
    share = own[Unit.DECODE] / sum(own.values())
    assert abs(share - 0.3) < 0.02, share
    acts = own[Unit.ACT] / 0.005
    assert steps > acts  # every act batch had a step beside it, and generation's own turns came on top


def test_closed_loop_acts_keep_their_debt_across_a_momentary_idle() -> None:
    # 64 closed-loop clients: every batch takes every waiting act, so the act class is idle for a
    # moment after each batch while generation runs; it must not re-enter debt-free
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5)
    used = {"act": 0.0, "gen": 0.0}
    for i in range(400):
        if i % 3 == 0:  # the clients' replies come back only now and then
            for c in range(64):
                policy.acts.push(work(bytes([c]), i))
        decision = policy.schedule(ReadyWork(decoding=8))
        cost_s = 0.28 if decision.unit is Unit.ACT else 0.0015
        used["act" if decision.unit is Unit.ACT else "gen"] += cost_s
        policy.charge(decision, cost_s)
    share = used["gen"] / sum(used.values())
    assert share > 0.25, share  # ~vlm_min_share; forgiving the debt gave generation far less
    # a busy period that ends forgives: after idling, an act goes first whatever it owed
    policy.acts.queues.clear()
    assert policy.schedule(ReadyWork()).unit is Unit.IDLE
    policy.acts.push(work(b"a", 0))
    assert policy.schedule(ReadyWork(decoding=1)).unit is Unit.ACT
