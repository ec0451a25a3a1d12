"""Anticipating periodic clients: predict each client's next ``act`` and hold for it, within a cap.

A robot control loop sends its acts on a period (10-50 Hz). When such a client is not waiting
but its next act is due before a batch of other clients' backlogs would end, the scheduling
policy (bridge/scheduling_policy.py) takes only the rows that end before it is due or, when not
even one row fits, holds the acts for it, so that its act does not wait for a backlog's batch
in progress. This module is that part of the policy: the per-client predictions
(:class:`ArrivalTracker`) and the hold decision with its allowance (:class:`Anticipation`).

* A client counts as periodic after PERIODIC_MIN_ARRIVALS arrivals predicted within 5 % of its
  period (or 1 ms).
* A hold lasts until the act is due plus HOLD_VARIATIONS times the measured variation (its mean
  prediction error) and HOLD_MARGIN_S, and ends as soon as the act comes.
* Holding is capped at ``share`` of the time by a token bucket (``[scheduler]
  anticipation_share``, banked at most ANTICIPATION_CREDIT_CAP_S), so a crowd of periodic
  clients cannot idle the device; share 0 turns anticipation off.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from bridge.work import ClientKey

ANTICIPATION_CREDIT_CAP_S = 0.05  # the hold allowance banked at most
PERIODIC_MIN_ARRIVALS = 4
PERIODIC_MAX_PERIOD_S = 1.0
PERIODIC_FORGET_S = 10.0  # a client silent this long is forgotten
HOLD_VARIATIONS = 4.0  # a hold lasts until the act is due + this many times its variation + HOLD_MARGIN_S
HOLD_MARGIN_S = 0.001
LATE_PHASE_GAIN = 0.1  # how far an arrival later than its client's tick moves the tick (of the error)
EARLY_PHASE_GAIN = 0.5  # ... and one earlier than the tick
TICK_PERIOD_GAIN = 0.05  # how far a phase error moves the clock's period


@dataclass
class ArrivalTracker:
    """One client's act arrivals, with two predictions of the next one; the one that has been
    closer lately is used (its mean error is ``variation_s``):

    * by spacing, ``last + period``: exact for a client that sends a period after each reply;
    * by phase, a tick every period (a phase-locked estimate): exact for a client that sends on a
      fixed clock, whose one late wake-up would shift the spacing prediction of its next act,
      due on time, by as much. Arrivals later than the tick move it less (x LATE_PHASE_GAIN) than
      earlier ones (x EARLY_PHASE_GAIN): a sleeping client wakes late, never early."""

    last_s: float
    count: int = 1
    period_s: float = 0.0
    tick_s: float = 0.0  # the phase prediction of the next arrival
    tick_period_s: float = 0.0  # the clock's period, as the phase errors correct it (not the spacing)
    spacing_error_s: float = 0.0  # mean absolute error of each prediction (moving averages)
    phase_error_s: float = 0.0

    def add(self, at_s: float) -> None:
        gap_s = at_s - self.last_s
        if gap_s <= 0:
            return
        phase_error_s = at_s - self.tick_s
        if self.count == 1:
            self.period_s = gap_s
        else:
            self.spacing_error_s = 0.8 * self.spacing_error_s + 0.2 * abs(gap_s - self.period_s)
            self.phase_error_s = 0.8 * self.phase_error_s + 0.2 * abs(phase_error_s)
            self.period_s = 0.8 * self.period_s + 0.2 * gap_s
        if self.count > 1 and abs(phase_error_s) < 0.5 * self.tick_period_s:  # the same tick: correct it
            gain = LATE_PHASE_GAIN if phase_error_s > 0 else EARLY_PHASE_GAIN
            self.tick_period_s += TICK_PERIOD_GAIN * phase_error_s
            self.tick_s += self.tick_period_s + gain * phase_error_s
        else:  # the first spacing, or a skipped tick: the phase starts again
            self.tick_s, self.tick_period_s = at_s + self.period_s, self.period_s
        self.last_s, self.count = at_s, self.count + 1

    @property
    def by_phase(self) -> bool:
        return self.phase_error_s <= self.spacing_error_s  # a tie: a clock (control loops run on one)

    @property
    def variation_s(self) -> float:
        return min(self.phase_error_s, self.spacing_error_s)

    def tolerance_s(self) -> float:
        return max(0.001, 0.05 * self.period_s)

    def periodic(self) -> bool:
        return (self.count >= PERIODIC_MIN_ARRIVALS and 0 < self.period_s <= PERIODIC_MAX_PERIOD_S
                and self.variation_s <= self.tolerance_s())

    def due_s(self) -> float:
        return self.tick_s if self.by_phase else self.last_s + self.period_s

    def hold_end_s(self) -> float:
        """How long acts may hold for this client's next act (a hold ends earlier when it comes)."""
        return self.due_s() + HOLD_VARIATIONS * self.variation_s + HOLD_MARGIN_S


class Anticipation:
    """The clients' arrival trackers, the hold in force and the hold allowance (a token bucket
    refilled at ``share`` of the elapsed time). Share 0: never anticipates."""

    def __init__(self, share: float, max_clients: int) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"anticipation share must be in [0, 1), got {share}")
        self.share = share
        self.max_clients = max_clients  # trackers beyond this many are pruned of silent clients
        self.holds = 0  # acts held for a periodic client (a counter tests and benchmarks read)
        self.hold_until_s: float | None = None  # the hold in force (perf_counter), if any
        self._arrivals: dict[ClientKey, ArrivalTracker] = {}
        # periodic clients' next act (due, hold end), read on generation's turns, which must not scan
        # every client's tracker; refreshed there for the clients whose acts came since (an act's
        # arrival only notes its client: the act path stays as it was)
        self._periodic_due: dict[ClientKey, tuple[float, float]] = {}
        self._arrived_since: set[ClientKey] = set()
        self._credit_s = ANTICIPATION_CREDIT_CAP_S
        self._credit_at_s: float | None = None

    def record(self, client: ClientKey, at_s: float) -> None:
        """An act of ``client`` arrived at ``at_s``."""
        self._arrived_since.add(client)
        tracker = self._arrivals.get(client)
        if tracker is not None:
            tracker.add(at_s)
            return
        if len(self._arrivals) > self.max_clients:
            cutoff_s = at_s - PERIODIC_FORGET_S
            self._arrivals = {c: a for c, a in self._arrivals.items() if a.last_s >= cutoff_s}
            self._periodic_due = {c: d for c, d in self._periodic_due.items() if c in self._arrivals}
            self._arrived_since &= self._arrivals.keys()  # (bounded by the trackers without generation turns)
        self._arrivals[client] = ArrivalTracker(at_s)

    def periodic_due_within(self, now_s: float, within_s: float, waiting: Container[ClientKey]) -> bool:
        """Whether a periodic client that is not ``waiting`` may send its next act within ``within_s``
        (its predicted due time, HOLD_MARGIN_S early: measured at the server a 10 Hz client's acts came
        -1.3..+2.2 ms around due) and is not past its hold window (a client that did not come is not
        waited for)."""
        if self.share <= 0:
            return False
        for client in self._arrived_since:
            tracker = self._arrivals.get(client)
            if tracker is not None and tracker.periodic():
                self._periodic_due[client] = (tracker.due_s(), tracker.hold_end_s())
            else:
                self._periodic_due.pop(client, None)
        self._arrived_since.clear()
        horizon_s = within_s + HOLD_MARGIN_S
        for client, (due_s, hold_end_s) in self._periodic_due.items():
            if due_s - now_s < horizon_s and now_s < hold_end_s and client not in waiting:
                return True
        return False

    def rows_before_periodic(
        self,
        limit: int,
        now_s: float,
        waiting: Container[ClientKey],
        estimate_ms: Callable[[int], float],
        rows_fitting: Callable[[int, int, float], int],
    ) -> int:
        """Rows of a heavy-only batch (at most ``limit``) that end before a periodic client not
        ``waiting`` is due; ``limit`` when none is due during the batch; 0: hold for it
        (``hold_until_s`` set, allowance spent). ``estimate_ms(rows)`` is the expected forward
        time, ``rows_fitting(rows, limit, budget_ms)`` grows rows within a time budget."""
        if self.share <= 0:
            return limit
        if self._credit_at_s is not None:
            self._credit_s = min(ANTICIPATION_CREDIT_CAP_S, self._credit_s + self.share * (now_s - self._credit_at_s))
        self._credit_at_s = now_s
        if self.hold_until_s is not None:
            if now_s < self.hold_until_s:
                return 0  # still holding (the client it holds for would be waiting, light, if it had come)
            self.hold_until_s = None
        batch_ms = estimate_ms(limit)
        if batch_ms <= 0:
            return limit
        due = [a for c, a in self._arrivals.items() if c not in waiting and a.periodic()]
        soon = [a for a in due if a.due_s() - now_s < batch_ms / 1000.0 and now_s < a.hold_end_s()]
        if not soon:
            # late past its hold but within its tolerance: the smallest batch, so it waits at most one row
            late = any(a.hold_end_s() <= now_s < a.due_s() + a.tolerance_s() for a in due)
            return 1 if late else limit
        first = min(soon, key=lambda a: a.due_s())
        rows = rows_fitting(0, limit, (first.due_s() - now_s) * 1000.0)
        if rows > 0:
            return rows
        hold_until_s = first.hold_end_s()
        if hold_until_s - now_s > self._credit_s:
            return limit  # the hold allowance is spent: no anticipation now
        self._credit_s -= hold_until_s - now_s
        self.hold_until_s = hold_until_s
        self.holds += 1
        return 0
