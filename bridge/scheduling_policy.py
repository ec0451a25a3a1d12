"""The scheduling policy: the one place that decides what the inference loop runs next.

In the spirit of vLLM's ``Scheduler.schedule()``: the loop hands it everything waiting (acts
per client, generation requests per client, control work) and what the generator reports ready;
each call returns one decision, and the loop charges the decision's measured time back.

* **Control first**: ``reset`` and other control work runs before anything else.
* **Budgets by model time**: the time of the model calls (an act forward, an admission unit, a
  decode step; not the replies' encoding and sending after them) is shared by weighted fair
  queuing over *virtual time*
  (as in CFS/WFQ): act batches carry weight ``1 - vlm_min_share``, generation
  ``vlm_min_share``; inside generation, admission units carry ``admission_share`` and decode
  steps the rest. A class that has work and the smallest virtual time runs; ties go to acts.
  A class that becomes busy starts no earlier than the class that kept running (no credit
  banked while idle) and keeps the debt of service it just had (a closed-loop client's acts go
  idle for a moment after every batch; forgiving that debt starved generation); when neither
  class has work both start level. So an ``act`` arriving while generation runs alone waits at
  most the one unit in progress (unless acts still owe generation its share of their last
  batch), and while both saturate, generation keeps its guaranteed share.
* **Fair across clients**: an act batch takes one request per client in round-robin order before
  a second from any client, starting after the client served first last time, so a client's
  backlog cannot push another client's ``act`` back by more than one batch. Generation
  requests are admitted into free slots round-robin by client too.
* **Batch time budget** (``max_batch_ms`` > 0): a batch takes no more rows than the policy's
  measured forward times say fit in ``max_batch_ms`` — but always one row per waiting client —
  so one client's deep pipeline cannot make the batch that a polite client waits behind long.
  Forward times are learnt per bucket (moving average); an unmeasured bucket is assumed to
  cost what the largest measured smaller one costs, so larger sizes get tried and learnt.
* **Light clients first** (act batches): a client with one act waiting (a closed-loop
  simulator) is *light*, one with a backlog (several acts queued) *heavy*. When both wait, the
  batch takes every light client's act and adds heavy clients' rows only while the batch's
  expected time stays within ``1 + LIGHT_BATCH_SLACK`` of the light rows' alone: on a cost curve
  where rows are nearly free (launch-bound) they join, where every row costs (compute-bound) a
  polite client's act does not run in a longer batch because of a flooder's backlog. A heavy
  client skipped once counts as light in the next batch, so it waits at most one batch.
* **Padded buckets** (``set_bucket_of``: the batch sizes a forward really runs at): forward
  times are learnt per bucket, and a batch that would be padded far up (40 rows into a 64-row
  bucket) takes the rows of a smaller bucket instead when the measured times say that serves
  more rows per second (32 rows now, the rest first in the next batch); rows that are nearly
  free keep the whole batch.
* **Periodic clients anticipated** (act batches with no light row): a robot control loop sends
  its acts on a period (10-50 Hz). When such a client is not waiting but its next act is due
  before a heavy-only batch would end, the batch takes only the heavy rows that end before it
  is due, or (when not even one row fits) the acts hold for it, so its act does not wait for a
  backlog's batch in progress (bridge/act_anticipation.py: each client's next act is predicted
  by spacing and by phase; a hold lasts until the act is due plus a margin for its measured
  variation and ends when the act comes; later than that, but within its tolerance, batches
  take one row). Holding is capped at ``[scheduler] anticipation_share`` of the time (a token
  bucket; 0 turns anticipation off), so a flood of periodic clients cannot idle the device.
  Generation runs during a hold if it has work.
* **Overlap** (``[scheduler] overlap``, for a generator with ``launch_decode_step`` /
  ``finish_decode_step``): a decode step is *launched* (in flight on the device's
  normal-priority stream) and an act batch runs beside it on the high-priority stream. When it
  is the acts' turn and sequences are decoding, the decision is "launch a decode step, run this
  act batch while it is in flight" (``Decision.launch_decode``); while a step is in flight the
  policy is asked again (``step_in_flight``) and answers another act batch if it is the acts'
  turn (an act arriving during a generation step starts at once instead of after it) or
  ``FINISH_DECODE`` (wait for the step). Admission units never run while a step is in flight.
  The loop charges a launched step only the loop time it held on its own (launch, waiting,
  finishing: not the act batches beside it), so generation keeps its share of loop time and
  the overlapped steps come on top.
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from bridge.act_anticipation import Anticipation
from bridge.config import SchedulerConfig
from bridge.work import ClientKey, Work
from models.interfaces import ReadyWork

LIGHT_BATCH_SLACK = 0.25  # heavy rows join a batch with light ones while it takes <= 1.25x the light rows' time
PADDING_MIN_GAIN = 0.02  # a smaller bucket replaces the padded one only when it serves >= 2 % more rows/s
# an admission unit is put after a decode step at most this often in a row when a periodic act is due
# (two decode steps, ~5 ms at moondream2-h200, cover an act due within a unit and its early margin)
MAX_ADMISSION_DEFERRALS = 2


class Unit(enum.Enum):
    IDLE = "idle"
    ACT = "act"
    ADMISSION = "admission"
    DECODE = "decode"
    FINISH_DECODE = "finish_decode"  # a decode step is in flight and it is generation's turn: wait for it


@dataclass(frozen=True)
class Decision:
    unit: Unit
    batch: tuple[Work, ...] = ()  # ACT: the requests of one forward, in reply order
    launch_decode: bool = False  # ACT: launch a decode step first; the batch runs while it is in flight
    hold_until_s: float | None = None  # IDLE: acts hold for a periodic client due then (perf_counter)


class _FairPair:
    """Weighted fair queuing between two classes by virtual time (used time / weight)."""

    def __init__(self, weight_first: float) -> None:
        self.weights = (max(weight_first, 1e-6), max(1.0 - weight_first, 1e-6))
        self.vtime = [0.0, 0.0]
        self._was_busy = [False, False]

    def pick(self, busy_first: bool, busy_second: bool) -> int | None:
        """-> 0 or 1 (the class to run), None when neither has work; ties go to the first.

        Re-entry as in start-time fair queuing: a class that becomes busy starts at
        ``max(its own virtual time, the system's)``, the system's being the smallest virtual time
        of the classes busy at the previous call. So no credit is banked while idle (it starts no
        earlier than the class that kept running), but a class that went idle only for a moment
        (a closed-loop client turning its replies around) keeps the debt of the service it just
        had. When neither class has work, both start level (a busy period ended: debts forgiven)."""
        was_first, was_second = self._was_busy
        vtime = self.vtime
        if not (busy_first or busy_second):
            if was_first or was_second:
                top = max(vtime)
                self.vtime = [top, top]
            self._was_busy = [False, False]
            return None
        if (busy_first and not was_first) or (busy_second and not was_second):  # a class (re-)enters
            if was_first and was_second:
                system = min(vtime)
            elif was_first or was_second:
                system = vtime[0] if was_first else vtime[1]
            else:
                system = max(vtime)
            if busy_first and not was_first:
                vtime[0] = max(vtime[0], system)
            if busy_second and not was_second:
                vtime[1] = max(vtime[1], system)
        self._was_busy = [busy_first, busy_second]
        if busy_first and busy_second:
            return 0 if self.vtime[0] <= self.vtime[1] else 1
        if busy_first:
            return 0
        return 1 if busy_second else None

    def charge(self, index: int, elapsed_s: float) -> None:
        self.vtime[index] += elapsed_s / self.weights[index]


@dataclass
class _ClientQueues:
    """Per-client FIFO queues in round-robin order (the OrderedDict's order is the rotation)."""

    queues: OrderedDict[ClientKey, deque[Work]] = field(default_factory=OrderedDict)

    def push(self, work: Work) -> None:
        self.queues.setdefault(work.client, deque()).append(work)

    def push_front(self, work: Work) -> None:
        self.queues.setdefault(work.client, deque()).appendleft(work)
        self.queues.move_to_end(work.client, last=False)

    def __bool__(self) -> bool:
        return bool(self.queues)

    def __len__(self) -> int:
        return sum(map(len, self.queues.values()))

    def __iter__(self) -> Iterator[Work]:
        return itertools.chain.from_iterable(self.queues.values())

    def prune(self, drop: Callable[[Work], bool]) -> None:
        """Remove work for which ``drop`` says so (it has been answered elsewhere)."""
        for client in list(self.queues):
            kept = deque(w for w in self.queues[client] if not drop(w))
            if kept:
                self.queues[client] = kept
            else:
                del self.queues[client]

    def rotate_after(self, client: ClientKey) -> None:
        """Make the client after ``client`` the first of the next round."""
        if client not in self.queues:
            return
        while next(iter(self.queues)) != client:
            self.queues.move_to_end(next(iter(self.queues)))
        self.queues.move_to_end(client)

    def take_round_robin(self, limit: int, accept: Callable[[Work], bool]) -> list[Work]:
        """Up to ``limit`` works, one per client per round, each the head of its client's queue."""
        taken: list[Work] = []
        first_served: ClientKey | None = None
        progress = True
        while len(taken) < limit and progress:
            progress = False
            for client in list(self.queues):
                queue = self.queues[client]
                if len(taken) >= limit:
                    break
                if queue and accept(queue[0]):
                    taken.append(queue.popleft())
                    first_served = first_served or client
                    progress = True
                if not queue:
                    del self.queues[client]
        if first_served is not None:
            self.rotate_after(first_served)
        return taken


def bucket_size(batch: int, max_batch: int) -> int:
    """The padded batch size: the next power of two, at most ``max_batch`` (1, 2, 4, ..., 64)."""
    size = 1
    while size < batch:
        size *= 2
    return min(size, max(max_batch, batch))


class SchedulingPolicy:
    """Holds the waiting work and decides, one call at a time, what runs next."""

    def __init__(
        self,
        max_batch: int,
        vlm_min_share: float,
        admission_share: float,
        max_batch_ms: float = 0.0,
        overlap: bool = False,
        anticipation_share: float = SchedulerConfig.anticipation_share,
    ) -> None:
        self.max_batch = max_batch
        self.overlap = overlap  # the loop sets it only for a generator that can launch a decode step
        # acts' turn: launch a decode step beside the batch (the loop clears it for launches that compute
        # synchronously, e.g. on CPU, where it would only put a decode step in front of the act)
        self.launch_beside_acts = overlap
        self.max_batch_ms = max_batch_ms
        self.forward_ms: dict[int, float] = {}  # bucket (padded rows) -> moving average of the measured forward time
        self.admission_unit_ms = 0.0  # moving average of an admission unit's measured time
        self.admissions_deferred = 0  # admission units put after a periodic client's act (health counter)
        self._deferred_in_a_row = 0  # admission turns deferred since the last admission unit ran
        self._bucket_of: Callable[[int], int] = lambda rows: rows
        self._skipped: set[ClientKey] = set()  # heavy clients left out of the last batch: light in the next
        self.anticipation = Anticipation(anticipation_share, 4 * max_batch)
        self.acts = _ClientQueues()
        self.generation = _ClientQueues()  # waiting for a slot
        self.control: deque[Work] = deque()
        self._act_vs_gen = _FairPair(1.0 - vlm_min_share)
        self._admission_vs_decode = _FairPair(admission_share)
        self._batch_key: Callable[[Work], Hashable] = lambda work: None

    def set_batch_key(self, key: Callable[[Work], Hashable]) -> None:
        self._batch_key = key

    def set_bucket_of(self, bucket_of: Callable[[int], int]) -> None:
        """The batch size a forward of n rows runs at (padding); the identity by default."""
        self._bucket_of = bucket_of

    def add_act(self, work: Work) -> None:
        """A new act (its arrival, ``work.received_s``, feeds the client's periodicity)."""
        self.anticipation.record(work.client, work.received_s)
        self.acts.push(work)

    @property
    def holds(self) -> int:
        """Acts held for a periodic client so far (``health.counters.act_holds``)."""
        return self.anticipation.holds

    def has_waiting(self) -> bool:
        return bool(self.acts.queues or self.generation.queues or self.control)

    def admissions(self, free_slots: int) -> list[Work]:
        """Generation requests to admit into the free slots now (cheap: no device work)."""
        return self.generation.take_round_robin(free_slots, lambda work: True) if free_slots > 0 else []

    def schedule(self, ready: ReadyWork, step_in_flight: bool = False, now_s: float | None = None) -> Decision:
        """The next device unit: an act batch, an admission unit, a decode step, or idle.

        With ``step_in_flight`` (a launched decode step not yet finished): an act batch to run
        beside it, or FINISH_DECODE. ``now_s`` (perf_counter) enables anticipating periodic clients."""
        if step_in_flight:
            if self._act_vs_gen.pick(bool(self.acts.queues), True) == 0:
                batch = self._act_batch(now_s)
                return Decision(Unit.ACT, tuple(batch)) if batch else Decision(Unit.FINISH_DECODE)
            return Decision(Unit.FINISH_DECODE)
        choice = self._act_vs_gen.pick(bool(self.acts.queues), ready.any)
        if choice is None:
            return Decision(Unit.IDLE)
        if choice == 0:
            batch = self._act_batch(now_s)
            if batch:
                launch = self.overlap and self.launch_beside_acts and ready.decoding > 0
                return Decision(Unit.ACT, tuple(batch), launch_decode=launch)
            if not ready.any:  # holding for a periodic client, nothing else to do meanwhile
                return Decision(Unit.IDLE, hold_until_s=self.anticipation.hold_until_s)
        inner = self._admission_vs_decode.pick(ready.admitting > 0, ready.decoding > 0)
        if inner == 0:
            if (self._deferred_in_a_row < MAX_ADMISSION_DEFERRALS and ready.decoding > 0
                    and self._act_due_during_admission(now_s)):
                self._deferred_in_a_row += 1
                self.admissions_deferred += 1
                return Decision(Unit.DECODE)  # an act can run beside a decode step, not beside an admission unit
            self._deferred_in_a_row = 0
        return Decision(Unit.ADMISSION if inner == 0 else Unit.DECODE)

    def _act_due_during_admission(self, now_s: float | None) -> bool:
        """Whether a periodic client's act is due before an admission unit started now would end.
        With overlap a decode step is in flight beside acts, an admission unit is not: the act would
        wait for the unit. Generation then runs its decode step instead and the admission unit at
        its next turn (the fair pair's debt keeps admission's share over time), deferred at most
        MAX_ADMISSION_DEFERRALS times in a row: clients that send right after each reply look
        periodic too, and under their load admission would otherwise wait for every decoding
        sequence to finish."""
        if now_s is None or not self.overlap or self.admission_unit_ms <= 0:
            return False
        return self.anticipation.periodic_due_within(now_s, self.admission_unit_ms / 1000.0, self.acts.queues)

    def _act_batch(self, now_s: float | None = None) -> list[Work]:
        """The next act batch; empty when the acts hold for a periodic client (``anticipation.hold_until_s``)."""
        queues = self.acts.queues
        if len(queues) == 1:
            client, queue = next(iter(queues.items()))
            if len(queue) == 1:  # one client with one act: a light row alone is the batch (as below)
                del queues[client]
                self.anticipation.hold_until_s = None
                self._skipped.clear()
                return [queue[0]]
        head = next(iter(queues.values()))[0]
        key = self._batch_key(head)

        def same(work: Work) -> bool:
            return self._batch_key(work) == key

        limit = self.row_limit()
        heads = {client: queue for client, queue in self.acts.queues.items() if same(queue[0])}
        light = {c for c, q in heads.items() if len(q) == 1 or c in self._skipped}
        if now_s is not None and not any(len(q) == 1 for q in heads.values()):  # backlogs only
            limit = self.anticipation.rows_before_periodic(
                limit, now_s, self.acts.queues, self.estimate_ms, self._rows_fitting)
            if limit == 0:
                return []
        self.anticipation.hold_until_s = None  # a batch is formed: no hold in force
        if light and len(light) < len(heads):
            taken = self.acts.take_round_robin(min(limit, len(light)), lambda w: w.client in light)
            rows = self._rows_within_slack(len(taken), limit)
            if rows > len(taken):
                taken += self.acts.take_round_robin(rows - len(taken), same)
        else:
            taken = self.acts.take_round_robin(limit, same)
        taken = self._cut_to_bucket(taken)
        served = {w.client for w in taken}
        self._skipped = {c for c in heads if c not in served and c not in light}
        return taken

    def _rows_within_slack(self, light_rows: int, limit: int) -> int:
        """Rows a batch with ``light_rows`` light rows may grow to with heavy rows (LIGHT_BATCH_SLACK)."""
        return self._rows_fitting(light_rows, limit, self.estimate_ms(light_rows) * (1.0 + LIGHT_BATCH_SLACK))

    def _rows_fitting(self, rows: int, limit: int, budget_ms: float) -> int:
        """``rows`` grown, up to ``limit``, while the expected forward time stays within ``budget_ms``."""
        while rows < limit and self.estimate_ms(rows + 1) <= budget_ms:
            rows += 1
        return rows

    def _cut_to_bucket(self, taken: list[Work]) -> list[Work]:
        """The rows of a smaller bucket when, by the measured times, they serve more rows per second
        than the whole batch padded up; the rows left out go back first in their clients' queues."""
        n = len(taken)
        whole_ms = self.forward_ms.get(self._bucket_of(n))
        if n <= 1 or not whole_ms:
            return taken
        best, best_rate = n, n / whole_ms
        for bucket, measured in self.forward_ms.items():  # keys are buckets: a full one pads nothing
            if bucket < n and measured > 0 and bucket / measured > best_rate * (1.0 + PADDING_MIN_GAIN):
                best, best_rate = bucket, bucket / measured
        for work in reversed(taken[best:]):
            self.acts.push_front(work)
        return taken[:best]

    def estimate_ms(self, rows: int) -> float:
        """Expected forward time of ``rows`` rows: its bucket's measured time, else the largest
        measured smaller bucket's (0 when nothing is measured yet)."""
        bucket = self._bucket_of(rows)
        if bucket in self.forward_ms:
            return self.forward_ms[bucket]
        smaller = [n for n in self.forward_ms if n < bucket]
        return self.forward_ms[max(smaller)] if smaller else 0.0

    def row_limit(self) -> int:
        """Rows of the next act batch: ``max_batch``, or fewer under the batch time budget."""
        if self.max_batch_ms <= 0:
            return self.max_batch
        floor = min(self.max_batch, len(self.acts.queues))  # one row per waiting client, always
        return max(1, self._rows_fitting(floor, self.max_batch, self.max_batch_ms))

    def charge(self, decision: Decision, elapsed_s: float) -> None:
        """Account a decision's measured time to its class."""
        if decision.unit is Unit.ACT:
            self._act_vs_gen.charge(0, elapsed_s)
            bucket = self._bucket_of(len(decision.batch))
            self.forward_ms[bucket] = _moving_average(self.forward_ms.get(bucket), elapsed_s * 1000.0)
        elif decision.unit in (Unit.ADMISSION, Unit.DECODE):
            self._act_vs_gen.charge(1, elapsed_s)
            self._admission_vs_decode.charge(0 if decision.unit is Unit.ADMISSION else 1, elapsed_s)
            if decision.unit is Unit.ADMISSION:
                known = self.admission_unit_ms if self.admission_unit_ms > 0 else None
                self.admission_unit_ms = _moving_average(known, elapsed_s * 1000.0)


def _moving_average(known: float | None, sample: float) -> float:
    """The measured times the policy learns: the first sample as it is, then 0.8 old + 0.2 new."""
    return sample if known is None else 0.8 * known + 0.2 * sample
