"""The scheduling policy alone (no sockets): shares, re-entry, round-robin, the batch time budget."""

from __future__ import annotations

import itertools
import random

from bridge.act_anticipation import ArrivalTracker
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


def linear_ms(bucket: int) -> float:
    return 1.3 + 4.4 * bucket  # nano-2b-h200's curve: every row costs (compute-bound)


def flat_ms(bucket: int) -> float:
    return 5.0 + 0.02 * bucket  # launch-bound: rows nearly free


def test_a_batch_padded_far_up_takes_a_smaller_buckets_rows_when_that_serves_more() -> None:
    buckets = (1, 2, 4, 8, 16, 32, 64)
    for curve, expected in ((linear_ms, 32), (flat_ms, 40)):
        policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5)
        policy.set_bucket_of(lambda n: bucket_size(n, 64))
        policy.forward_ms.update({b: curve(b) for b in buckets})
        clients = [bytes([c]) for c in range(40)]
        for c in clients:
            policy.acts.push(work(c, 0))
        first = policy.schedule(ReadyWork()).batch
        assert len(first) == expected, curve.__name__
        if expected < 40:  # the rows left out lead the next batch, nothing lost or repeated
            second = policy.schedule(ReadyWork()).batch
            assert {w.client for w in second} == {(c,) for c in clients} - {w.client for w in first}
            assert len(second) == 8
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5)
    policy.set_bucket_of(lambda n: bucket_size(n, 64))
    policy.charge(Decision(Unit.ACT, tuple(work(bytes([c]), 0) for c in range(33))), 0.28)
    assert policy.forward_ms == {64: 280.0}  # learnt per bucket, not per row count


def test_a_polite_act_does_not_run_in_a_longer_batch_because_of_a_flooders_backlog() -> None:
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=12.0)
    policy.set_bucket_of(lambda n: bucket_size(n, 64))
    policy.forward_ms.update({b: linear_ms(b) for b in (1, 2, 4, 8)})
    for i in range(64):
        policy.acts.push(work(b"flood", i))
    assert len(policy.schedule(ReadyWork()).batch) == 2  # the flooder alone: 2 rows fit in 12 ms
    policy.acts.push(work(b"polite", 0))
    batch = policy.schedule(ReadyWork()).batch
    assert [w.client for w in batch] == [(b"polite",)]  # a flooder row would make it 10.1 ms, not 5.7
    following = policy.schedule(ReadyWork()).batch  # the flooder, skipped once, is served next
    assert following and all(w.client == (b"flood",) for w in following)
    # where rows are nearly free the flooder's rows do join the polite one
    cheap = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=12.0)
    cheap.set_bucket_of(lambda n: bucket_size(n, 64))
    cheap.forward_ms.update({b: flat_ms(b) for b in (1, 2, 4, 8, 16, 32, 64)})
    for i in range(64):
        cheap.acts.push(work(b"flood", i))
    cheap.acts.push(work(b"polite", 0))
    mixed = cheap.schedule(ReadyWork()).batch
    assert (b"polite",) in {w.client for w in mixed} and len(mixed) > 8


def test_a_backlogged_client_waits_at_most_one_batch_behind_light_ones() -> None:
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5)
    policy.set_bucket_of(lambda n: bucket_size(n, 64))
    policy.forward_ms.update({b: linear_ms(b) for b in (1, 2, 4, 8, 16, 32, 64)})
    served_flood = []
    for round_ in range(20):  # 16 closed-loop clients always waiting, and one flooder
        for c in range(16):
            if not policy.acts.queues.get((bytes([c]),)):
                policy.acts.push(work(bytes([c]), round_))
        while len(policy.acts.queues.get((b"flood",), ())) < 8:
            policy.acts.push(work(b"flood", round_))
        batch = policy.schedule(ReadyWork()).batch
        served_flood.append(any(w.client == (b"flood",) for w in batch))
    assert all(a or b for a, b in itertools.pairwise(served_flood)), served_flood


def arriving(client: bytes, rid: int, at_s: float) -> Work:
    return Work([client], (client,), rid, "act", at_s, None)


def anticipating_policy() -> SchedulingPolicy:
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=12.0)
    policy.set_bucket_of(lambda n: bucket_size(n, 64))
    policy.forward_ms.update({b: linear_ms(b) for b in (1, 2, 4, 8)})  # 1 row 5.7 ms, 2 rows 10.1 ms
    return policy


def test_a_periodic_client_is_anticipated_when_its_act_is_due_during_a_flooders_batch() -> None:
    policy = anticipating_policy()
    for i in range(5):  # a 10 Hz client, served each time
        policy.add_act(arriving(b"polite", i, i * 0.1))
        assert [w.client for w in policy.schedule(ReadyWork(), now_s=i * 0.1).batch] == [(b"polite",)]
    for i in range(64):
        policy.add_act(arriving(b"flood", i, 0.41))
    # due at 0.5 s: at 0.45 s the flooder's 2-row batch (10.1 ms) ends long before it
    assert len(policy.schedule(ReadyWork(), now_s=0.45).batch) == 2
    # at 0.492 s (8 ms before): only 1 row (5.7 ms) ends before it is due
    assert len(policy.schedule(ReadyWork(), now_s=0.492).batch) == 1
    # at 0.497 s not even one row fits: the acts hold until it is due (+ 4 x its variation + 1 ms)
    held = policy.schedule(ReadyWork(), now_s=0.497)
    assert held.unit is Unit.IDLE and held.hold_until_s is not None and 0.5 <= held.hold_until_s < 0.5015
    assert policy.holds == 1
    generation = policy.schedule(ReadyWork(decoding=2), now_s=0.498)  # still holding: generation may run
    assert generation.unit is Unit.DECODE
    policy.add_act(arriving(b"polite", 5, 0.5))  # it comes: it runs next, alone
    assert [w.client for w in policy.schedule(ReadyWork(), now_s=0.5).batch] == [(b"polite",)]
    # it does not come next time: after the hold the flooder runs
    assert policy.schedule(ReadyWork(), now_s=0.597).unit is Unit.IDLE
    late = policy.schedule(ReadyWork(), now_s=0.603)  # late, within its 5 ms tolerance: one row at a time
    assert late.unit is Unit.ACT and len(late.batch) == 1
    assert len(policy.schedule(ReadyWork(), now_s=0.606).batch) == 2  # past it: not waited for any more


def test_anticipation_share_zero_turns_anticipation_off() -> None:
    policy = SchedulingPolicy(max_batch=64, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=12.0,
                              anticipation_share=0.0)
    policy.set_bucket_of(lambda n: bucket_size(n, 64))
    policy.forward_ms.update({b: linear_ms(b) for b in (1, 2, 4, 8)})
    for i in range(5):  # the same 10 Hz client and flooder as above
        policy.add_act(arriving(b"polite", i, i * 0.1))
        policy.schedule(ReadyWork(), now_s=i * 0.1)
    for i in range(64):
        policy.add_act(arriving(b"flood", i, 0.41))
    # where the anticipating policy takes 1 row, then holds, this one takes the flooder's 2-row batches
    assert len(policy.schedule(ReadyWork(), now_s=0.492).batch) == 2
    assert len(policy.schedule(ReadyWork(), now_s=0.497).batch) == 2
    assert policy.holds == 0


def test_a_clock_driven_client_that_woke_late_once_is_anticipated_on_its_next_tick() -> None:
    policy = anticipating_policy()
    for i, at in enumerate((0.0, 0.1, 0.2, 0.3, 0.412)):  # a 10 Hz clock; one wake-up 12 ms late
        policy.add_act(arriving(b"polite", i, at))
        assert [w.client for w in policy.schedule(ReadyWork(), now_s=at).batch] == [(b"polite",)]
    for i in range(64):
        policy.add_act(arriving(b"flood", i, 0.42))
    # its next act is due on the tick, 0.5 s, not a period after the late one (~0.514 s): at
    # 0.492 s only one row (5.7 ms) ends before it; a 2-row batch (10.1 ms) would end after it
    assert len(policy.schedule(ReadyWork(), now_s=0.492).batch) == 1
    held = policy.schedule(ReadyWork(), now_s=0.498)
    # the hold: due (0.5018 s) + 4 x its variation (2.4 ms) + 1 ms
    assert held.unit is Unit.IDLE and held.hold_until_s is not None and 0.5 < held.hold_until_s < 0.513


def test_each_client_is_predicted_the_way_it_sends() -> None:
    rng = random.Random(7)
    clock = ArrivalTracker(0.0)  # sends on a 10 Hz clock, waking 0-4 ms late
    for k in range(1, 40):
        clock.add(k * 0.1 + rng.uniform(0.0, 0.004))
    assert clock.by_phase and clock.periodic()
    assert abs(clock.due_s() - 4.0) < 0.003  # the next tick (its wake-up adds 0-4 ms)
    relative = ArrivalTracker(0.0)  # sends 100 ms after each reply, which takes 2-6 ms
    at = 0.0
    for _ in range(40):
        at += 0.1 + rng.uniform(0.002, 0.006)
        relative.add(at)
    assert not relative.by_phase and relative.periodic()
    assert abs(relative.due_s() - (at + 0.104)) < 0.003  # a period (with the reply) after the last


def test_an_irregular_client_is_not_anticipated_and_holding_is_capped() -> None:
    policy = anticipating_policy()
    for i, at in enumerate((0.0, 0.1, 0.13, 0.3, 0.31)):  # no steady period
        policy.add_act(arriving(b"jittery", i, at))
        policy.schedule(ReadyWork(), now_s=at)
    for i in range(64):
        policy.add_act(arriving(b"flood", i, 0.32))
    assert len(policy.schedule(ReadyWork(), now_s=0.33).batch) == 2
    # many periodic clients due all the time cannot idle the device beyond the anticipation share (0.1)
    crowd = anticipating_policy()
    clients = [bytes([c]) for c in range(20)]
    for i in range(5):
        for c, client in enumerate(clients):  # 20 clients at 10 Hz, due 5 ms apart
            at = i * 0.1 + c * 0.005
            crowd.add_act(arriving(client, i, at))
            crowd.schedule(ReadyWork(), now_s=at)
    for i in range(200):
        crowd.add_act(arriving(b"flood", i, 0.5))
    now, held_s = 0.5, 0.0
    while now < 1.5:
        decision = crowd.schedule(ReadyWork(), now_s=now)
        if decision.unit is Unit.IDLE:
            assert decision.hold_until_s is not None
            held_s += decision.hold_until_s - now
            now = decision.hold_until_s
        else:
            now += crowd.estimate_ms(len(decision.batch)) / 1000.0
        if len(crowd.acts) < 10:
            for i in range(64):
                crowd.add_act(arriving(b"flood", 1000 + i, now))
    assert crowd.holds > 0
    assert held_s <= 0.1 * 1.0 + 0.05 + 1e-9, held_s  # the share plus the banked allowance


class _ReferenceFairPair:
    """The start-time fair queuing re-entry rule written plainly (as _FairPair.pick first was)."""

    def __init__(self, weight_first: float) -> None:
        self.weights = (max(weight_first, 1e-6), max(1.0 - weight_first, 1e-6))
        self.vtime = [0.0, 0.0]
        self.was_busy = [False, False]

    def pick(self, busy_first: bool, busy_second: bool) -> int | None:
        busy = (busy_first, busy_second)
        if not any(busy):
            if any(self.was_busy):
                self.vtime = [max(self.vtime)] * 2
            self.was_busy = [False, False]
            return None
        running = [self.vtime[i] for i in (0, 1) if self.was_busy[i]]
        system = min(running) if running else max(self.vtime)
        for i in (0, 1):
            if busy[i] and not self.was_busy[i]:
                self.vtime[i] = max(self.vtime[i], system)
        self.was_busy = list(busy)
        if busy_first and busy_second:
            return 0 if self.vtime[0] <= self.vtime[1] else 1
        return 0 if busy_first else 1


def test_fair_pair_picks_as_the_plain_start_time_fair_queuing_rule() -> None:
    from bridge.scheduling_policy import _FairPair

    rng = random.Random(7)
    for weight in (0.65, 0.5, 0.1):
        fast, reference = _FairPair(weight), _ReferenceFairPair(weight)
        for _ in range(5000):
            busy = (rng.random() < 0.7, rng.random() < 0.6)
            choice = fast.pick(*busy)
            assert choice == reference.pick(*busy)
            assert fast.vtime == reference.vtime
            if choice is not None:
                cost_s = rng.choice((0.0, 0.001, 0.005, 0.02))
                fast.charge(choice, cost_s)
                reference.vtime[choice] += cost_s / reference.weights[choice]


def test_a_lone_act_is_its_own_batch_and_clears_what_an_earlier_batch_left() -> None:
    policy = SchedulingPolicy(max_batch=4, vlm_min_share=0.3, admission_share=0.5, max_batch_ms=5.0)
    policy.charge(Decision(Unit.ACT, (work(b"x", 0), work(b"x", 1))), 0.010)  # 2 rows: 10 ms, over the budget
    policy.acts.push(work(b"polite", 0))
    for i in range(3):
        policy.acts.push(work(b"flood", i))
    first = policy.schedule(ReadyWork())
    assert [w.client for w in first.batch] == [(b"polite",)]  # the light row alone: the flooder is skipped
    lone = work(b"other", 0)
    policy.acts.queues.clear()
    policy.acts.push(lone)
    assert policy.schedule(ReadyWork()).batch == (lone,)
    assert not policy.acts and not policy.acts.queues
    for i in range(3):  # the flooder skipped before the lone batch is not carried over as light
        policy.acts.push(work(b"flood", 10 + i))
    policy.acts.push(work(b"polite", 1))
    policy.acts.push(work(b"polite", 2))
    batch = policy.schedule(ReadyWork()).batch
    # both backlogged, one row each (the budget's floor); a stale skip would make the flooder light
    # and its row alone the batch (the light row's estimate leaves no room for a heavy one)
    assert sorted(w.client for w in batch) == [(b"flood",), (b"polite",)]


def _policy_with_a_50hz_client(*, overlap: bool = True, anticipation_share: float = 0.1) -> SchedulingPolicy:
    """A 50 Hz client seen 6 times (last act at 0.1 s: next due at 0.12 s, served), admission units of 1.7 ms."""
    policy = SchedulingPolicy(max_batch=8, vlm_min_share=0.3, admission_share=0.5, overlap=overlap,
                              anticipation_share=anticipation_share)
    for i in range(6):
        policy.add_act(arriving(b"robot", i, 0.02 * i))
        policy.schedule(ReadyWork(), now_s=0.02 * i)
    policy.charge(Decision(Unit.ADMISSION), 0.0017)
    return policy


def test_an_admission_unit_is_put_after_a_decode_step_when_a_periodic_act_is_due_during_it() -> None:
    both = ReadyWork(admitting=1, decoding=4)
    policy = _policy_with_a_50hz_client()
    assert policy.schedule(both, now_s=0.105).unit is Unit.ADMISSION  # due in 15 ms: the unit ends long before
    policy = _policy_with_a_50hz_client()
    assert policy.schedule(both, now_s=0.119).unit is Unit.DECODE  # due in 1 ms: the act runs beside a step
    assert policy.admissions_deferred == 1
    assert policy.schedule(both, now_s=0.1195).unit is Unit.DECODE  # still due: deferred a second time
    assert policy.schedule(both, now_s=0.1198).unit is Unit.ADMISSION  # never more than twice in a row
    assert policy.admissions_deferred == 2
    # nothing to run beside, no overlap (a decode step is not in flight beside acts), anticipation off
    for policy, ready in ((_policy_with_a_50hz_client(), ReadyWork(admitting=1)),
                          (_policy_with_a_50hz_client(overlap=False), both),
                          (_policy_with_a_50hz_client(anticipation_share=0.0), both)):
        assert policy.schedule(ready, now_s=0.119).unit is Unit.ADMISSION
        assert policy.admissions_deferred == 0


def test_a_periodic_client_whose_act_is_waiting_or_did_not_come_defers_nothing() -> None:
    both = ReadyWork(admitting=1, decoding=4)
    policy = _policy_with_a_50hz_client()
    assert policy.schedule(both, now_s=0.135).unit is Unit.ADMISSION  # past its hold window: not waited for
    policy = _policy_with_a_50hz_client()
    policy.acts.push(arriving(b"robot", 6, 0.118))  # it came early and waits: deferring would not help it
    assert policy.anticipation.periodic_due_within(0.119, 0.0017, policy.acts.queues) is False


def test_clients_noted_for_the_periodic_check_are_forgotten_with_their_trackers() -> None:
    from bridge.act_anticipation import PERIODIC_FORGET_S, Anticipation

    anticipation = Anticipation(0.1, max_clients=8)
    for i in range(100):  # one act each from 100 short-lived clients, no generation turn ever asks
        anticipation.record((b"c%d" % i,), i * PERIODIC_FORGET_S)
    assert len(anticipation._arrived_since) <= 9 and len(anticipation._arrivals) <= 9
