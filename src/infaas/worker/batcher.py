"""The batching queue: a FIFO with one pure step, "form the next batch".

It knows nothing of sockets or threads. Time is passed in (``now``, from a
monotonic clock shared by every process on the host). The worker composes it
with a condition variable and a runtime; tests drive it with a fake clock.

Rules of :meth:`BatchQueue.next`:
- a request that can no longer meet its deadline (``now + predicted latency >
  deadline``) and asked to be dropped when late is returned as ``expired``,
  to be answered with an error instead of being served late;
- the head request fixes the batch's shape key (non-batch dims); later
  compatible requests join in FIFO order while the rows fit ``max_batch``;
- the batch leaves at once when it is full, when ``max_delay_s`` is 0
  (greedy: whatever queued while the runtime was busy forms the batch), when
  the head has waited ``max_delay_s``, or when waiting longer would make its
  most urgent member miss its deadline;
- SLO-aware (``slo_wait``): when members carry deadlines, the batch waits for
  company as long as its most urgent member can still finish in time, but no
  longer than one full batch takes to run (past that, waiting costs more
  latency than batching saves), only when requests overlap (most recent
  arrivals, EWMA, found others queued or running), and only while they keep
  coming: until twice the usual gap between overlapping arrivals has passed
  since the last one. bench/overhead showed both failures of waiting longer:
  one client at a time waited 10-17 ms a request for a second that could not
  come, and 8 closed-loop clients waited a full batch of 16 (90 ms) for rows
  that could not come before their own answers (throughput 173 -> 59 img/s);
- otherwise ``wait_s`` says how long until one of those becomes true.

Admission (:meth:`BatchQueue.admit`, also pure): a new request is refused at once, before it
costs compute, when the work queued ahead of it (online requests go ahead of offline ones) plus
its own batch cannot finish by its deadline, when the queue would hold more than ``max_wait_s``
of work (the bound in rows follows from the latency fit: what can finish within the longest
allowed wait), or when it would hold more than ``max_bytes`` of tensors. Predictions are scaled
by the ratio of measured to predicted batch time (:meth:`observe`), so a profile taken on a
quieter machine does not over-admit; the work queued ahead is scaled by how fast the queue really
drains while it is backlogged (:meth:`observe_backlogged`: a batch's compute plus the worker's own work
around it, its replies and the decoding of new requests on the same cores), which for a small model
at a high request rate is well over its compute alone.

A standing queue is refused too (CoDel's rule, for admission), while the queue is overloaded (it
refused a request in the last second, since its batches began to start late): when every batch of the last interval started after its
oldest request had waited longer than the target (two full batches' time, at least 5 ms), the queue
is not absorbing a burst but standing, and a new request that would wait longer than the target is
refused. Without refusals a standing queue is a closed loop of clients (16 clients keep 16 requests
queued, served as fast as they come) and is left alone. A queue filled to its deadline serves no
more than a short one while arrivals outrun it; it only makes every answer as late as the deadline
allows, and any delay on the way back then makes it late (bench/overload, a small model at hundreds
of requests a second).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infaas.registry.types import decayed

STANDING_MIN_S = 0.005  # the least queue wait counted as standing (CoDel's target) ...
STANDING_INTERVAL_S = 0.1  # ... when it lasts this long (at least four targets) ...
STANDING_REFUSED_S = 1.0  # ... and the queue refused a request this recently (overloaded, not a closed loop)


@dataclass(slots=True)
class _Learned:
    """A measured / predicted ratio (EWMA), decaying toward the profile's 1.0 from when it was set."""

    value: float = 1.0
    at: float | None = None  # when a batch last set it (the queue's clock)

    def now(self, t: float) -> float:
        return self.value if self.at is None else decayed(self.value, t - self.at)


@dataclass(slots=True)
class Pending:
    """One queued request."""

    key: Any
    rows: int
    arrival: float
    shape_key: tuple = ()
    deadline: float | None = None
    drop_late: bool = True
    payload: Any = None
    offline: bool = False  # a batch job's request: counted apart from online demand
    nbytes: int = 0
    length: int | None = None  # its dynamic axis's length (a sequence), when the variant has one
    out: dict | None = None  # output name -> the shared-memory span it is written to (protocol.shm.Span)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why :meth:`BatchQueue.admit` refused a request, and when a retry could succeed."""

    reason: str
    retry_after_s: float
    overloaded: bool = True  # False: the request's own batch cannot make its deadline, queue or not


@dataclass(slots=True)
class Formed:
    """What :meth:`BatchQueue.next` decided."""

    batch: list[Pending] = field(default_factory=list)
    expired: list[Pending] = field(default_factory=list)
    wait_s: float | None = None  # None: nothing queued, wait for a put

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.batch)


def _no_latency(rows: int) -> float:
    return 0.0


class BatchQueue:
    def __init__(
        self,
        max_batch: int,
        max_delay_s: float = 0.0,
        predict_s: Callable[[int], float] = _no_latency,
        slo_wait: bool = False,
        max_wait_s: float | None = None,
        max_bytes: int | None = None,
        instances: int = 1,
        admission: bool = True,
        axis_factor: Callable[[int | None], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._fit = predict_s
        self._axis = axis_factor  # a request's dynamic-axis length -> its cost against the batch table's
        self.slo_wait = slo_wait
        self.max_wait_s = max_wait_s
        self.max_bytes = max_bytes
        self.instances = max(1, instances)
        self.admission = admission  # off: only the bytes bound refuses; deadlines are kept in the queue
        self._scale = _Learned()  # measured / predicted batch time (the clock: the simulator's own there)
        self._drain = _Learned()  # measured / predicted time from a backlogged batch's start to its last reply
        self._above_since: float | None = None  # when batches began to start later than the target
        self._refused_at: float | None = None  # when admission last refused a request as overloaded
        self._clock = clock
        self._queue: deque[Pending] = deque()
        self.overlap = 0.0  # EWMA: did online arrivals find others queued or running (1) or not (0)
        self.gap_s: float | None = None  # EWMA of the time between overlapping online arrivals
        self._last_arrival: float | None = None
        self.rows_queued = 0
        self.offline_rows_queued = 0
        self.bytes_queued = 0
        # rows weighted by their own length's cost (axis_factor): the queue ahead costed per request
        self.units_queued = 0.0
        self.offline_units_queued = 0.0

    def factor(self, length: int | None) -> float:
        """A row as long as ``length`` costs this many rows of the batch table's (1 without an axis)."""
        return self._axis(length) if self._axis is not None and length else 1.0

    @property
    def scale(self) -> float:
        """The learned correction now: decaying toward the profile while no batch refreshes it."""
        return self._scale.now(self._clock())

    @property
    def backlog_scale(self) -> float:
        """The correction for queued work: how much slower than the fit a backlogged queue drains
        (never less than :attr:`scale`), decaying like it."""
        now = self._clock()
        return max(self._scale.now(now), self._drain.now(now))

    def standing_target_s(self) -> float:
        """The queue wait past which a queue that stays is standing: two full batches, at least 5 ms."""
        return max(STANDING_MIN_S, 2 * self.predict_s(self.max_batch))

    def standing(self, now: float) -> bool:
        """Whether every batch of the last interval started later than the target after its oldest
        request arrived, and the queue refused a request in the last second, since they began to."""
        if self._above_since is None or self._refused_at is None or self._refused_at < self._above_since:
            return False  # no refusal since batches began to start late: a burst or a closed loop, not overload
        if now - self._refused_at > STANDING_REFUSED_S:
            return False
        return now - self._above_since >= max(STANDING_INTERVAL_S, 4 * self.standing_target_s())

    def _started(self, now: float, head_arrival: float) -> None:
        if now - head_arrival <= self.standing_target_s():
            self._above_since = None
        elif self._above_since is None:
            self._above_since = now

    def predict_s(self, rows: int, length: int | None = None) -> float:
        """Predicted time of one batch of ``rows`` (whose dynamic axis is ``length`` long): the fit,
        scaled by the axis's cost (Profile.cost_ms) and by what was measured here."""
        return self._fit(rows) * self.factor(length) * self.scale

    def _learn(self, learned: _Learned, before: float, rows: int, seconds: float, alpha: float, length: int | None):
        """Move ``learned`` from ``before`` toward measured / predicted (bounded 0.5-10) by ``alpha``."""
        predicted = self._fit(rows) * self.factor(length)
        if predicted > 0 and seconds > 0:
            learned.value = before + alpha * (min(10.0, max(0.5, seconds / predicted)) - before)
            learned.at = self._clock()

    def observe(self, rows: int, seconds: float, alpha: float = 0.2, length: int | None = None) -> None:
        """A batch of ``rows`` took ``seconds``: move the scale toward measured / predicted."""
        self._learn(self._scale, self.scale, rows, seconds, alpha, length)

    def observe_backlogged(self, rows: int, seconds: float, alpha: float = 0.2, length: int | None = None) -> None:
        """With requests still queued, a batch of ``rows`` held its instance ``seconds`` from its start
        to its last reply: move the drain correction toward measured / predicted."""
        self._learn(self._drain, self.backlog_scale, rows, seconds, alpha, length)

    def work_s(self, rows: int, length: int | None = None) -> float:
        """Time to drain ``rows`` queued rows (as long as ``length``): full batches, then the rest,
        shared by the instances, at the rate measured while backlogged."""
        full, rest = divmod(rows, self.max_batch)
        batches = full * self._fit(self.max_batch) + (self._fit(rest) if rest else 0.0)
        return batches * self.factor(length) * self.backlog_scale / self.instances

    def ahead_s(self, rows: int, length: int | None, offline: bool) -> float:
        """Time to run what is queued ahead of a new request (online requests go ahead of offline
        ones) and then its own ``rows``: each queued request costed at its own length, the batches
        as the fit times them."""
        ahead = self.rows_queued if offline else self.rows_queued - self.offline_rows_queued
        units = self.units_queued if offline else self.units_queued - self.offline_units_queued
        total = ahead + rows
        weight = (max(0.0, units) + rows * self.factor(length)) / total if total else 1.0
        return self.work_s(total) * weight

    def admit(
        self,
        rows: int,
        nbytes: int,
        deadline: float | None,
        now: float,
        offline: bool = False,
        busy_s: float = 0.0,
        length: int | None = None,
    ) -> Refusal | None:
        """None if a request of ``rows`` can join the queue; else why not. ``busy_s``: time until an
        instance frees up from the batch it is running. ``length``: its dynamic axis's length (the
        queued requests ahead are costed at theirs)."""
        refusal = self._judge(rows, nbytes, deadline, now, offline, busy_s, length)
        if refusal is not None and refusal.overloaded:
            self._refused_at = now
        return refusal

    def _judge(
        self,
        rows: int,
        nbytes: int,
        deadline: float | None,
        now: float,
        offline: bool,
        busy_s: float,
        length: int | None,
    ) -> Refusal | None:
        if self.max_bytes is not None and self.bytes_queued + nbytes > self.max_bytes and self._queue:
            return Refusal(
                f"queue holds {self.bytes_queued} bytes of tensors (bound {self.max_bytes})",
                self.ahead_s(0, None, offline=True) + busy_s,
            )
        if not self.admission:
            return None
        ahead = self.rows_queued if offline else self.rows_queued - self.offline_rows_queued
        wait = busy_s + self.ahead_s(rows, length, offline)
        if self.max_wait_s is not None and ahead and wait > self.max_wait_s:
            return Refusal(
                f"queue holds {ahead} rows, {wait * 1000:.0f} ms of work, past its bound of "
                f"{self.max_wait_s * 1000:.0f} ms",
                wait - self.max_wait_s,
            )
        if ahead and self.standing(now) and wait > (target := self.standing_target_s()):
            return Refusal(
                f"a standing queue: its batches have started over {target * 1000:.0f} ms after their oldest "
                f"request arrived for {(now - (self._above_since or now)) * 1000:.0f} ms; {ahead} rows queued, "
                f"{wait * 1000:.0f} ms of work",
                wait - target,
            )
        if deadline is not None and now + wait > deadline:
            left = max(0.0, deadline - now)
            if not ahead and not busy_s:
                return Refusal(
                    f"its batch of {rows} rows takes about {wait * 1000:.1f} ms, "
                    f"{left * 1000:.1f} ms left before its deadline",
                    0.0,
                    overloaded=False,
                )
            return Refusal(
                f"{ahead} rows queued ahead: about {wait * 1000:.0f} ms to finish, "
                f"{left * 1000:.0f} ms left before its deadline",
                max(0.0, wait - left),
            )
        return None

    def cancel(self, key: Any) -> Pending | None:
        """Take a queued request out (its caller gave up); None if it is not queued (running or done)."""
        for i, item in enumerate(self._queue):
            if item.key == key:
                del self._queue[i]
                self._account(item, -1)
                return item
        return None

    def _account(self, item: Pending, sign: int) -> None:
        self.rows_queued += sign * item.rows
        self.bytes_queued += sign * item.nbytes
        units = item.rows * self.factor(item.length)
        self.units_queued += sign * units
        if item.offline:
            self.offline_rows_queued += sign * item.rows
            self.offline_units_queued += sign * units

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: Pending, running: bool = False) -> None:
        """Queue in FIFO order, except that online requests go ahead of queued offline (job) ones.
        ``running``: a batch of this queue is running now (the caller knows)."""
        if not item.offline:
            found = running or self.rows_queued > self.offline_rows_queued
            self.overlap += 0.2 * (float(found) - self.overlap)
            last, self._last_arrival = self._last_arrival, item.arrival
            if found and last is not None and item.arrival >= last:
                gap = item.arrival - last
                self.gap_s = gap if self.gap_s is None else self.gap_s + 0.2 * (gap - self.gap_s)
        self._account(item, +1)
        if item.offline or not self._queue or not self._queue[-1].offline:
            self._queue.append(item)
            return
        at = len(self._queue)
        while at > 0 and self._queue[at - 1].offline:
            at -= 1
        self._queue.insert(at, item)

    def drain(self) -> list[Pending]:
        """Everything still queued (to fail it on shutdown)."""
        items = list(self._queue)
        self._queue.clear()
        self.rows_queued = self.offline_rows_queued = self.bytes_queued = 0
        self.units_queued = self.offline_units_queued = 0.0
        return items

    def next(self, now: float) -> Formed:
        formed = Formed()
        self._expire(now, formed.expired)
        if not self._queue:
            return formed

        head = self._queue[0]
        chosen: list[int] = []
        rows = 0
        for i, item in enumerate(self._queue):
            if item.shape_key != head.shape_key:
                continue
            if rows + item.rows > self.max_batch and chosen:
                break
            chosen.append(i)
            rows += item.rows
            if rows >= self.max_batch:
                break

        members = [self._queue[i] for i in chosen]
        full = rows >= self.max_batch
        due = head.arrival + self.max_delay_s
        deadlines = [m.deadline for m in members if m.deadline is not None]
        waiting = self.max_delay_s > 0
        if deadlines:
            # leave while the most urgent can still make it (one batch shares one shape, so one length)
            latest = min(deadlines) - self.predict_s(rows, head.length)
            if self.slo_wait:
                due = min(latest, head.arrival + self.predict_s(self.max_batch, head.length))
                waiting = self.overlap >= 0.5 and self.gap_s is not None and self._last_arrival is not None
                if waiting:  # company comes while arrivals keep coming
                    due = min(due, self._last_arrival + 2 * self.gap_s)
            else:
                due = min(due, latest)
        if full or not waiting or now >= due:
            for i in reversed(chosen):
                del self._queue[i]
            for m in members:
                self._account(m, -1)
            formed.batch = members
            self._started(now, min(m.arrival for m in members))
        else:
            formed.wait_s = due - now
        return formed

    def _expire(self, now: float, out: list[Pending]) -> None:
        if not any(p.deadline is not None for p in self._queue):
            return
        keep: deque[Pending] = deque()
        for item in self._queue:
            late = item.deadline is not None and now + self.predict_s(item.rows, item.length) > item.deadline
            if late and item.drop_late:
                out.append(item)
                self._account(item, -1)
            else:
                keep.append(item)
        self._queue = keep


def preferred_batch(timings: dict[int, float], max_batch: int, tolerance: float = 0.05) -> int:
    """The smallest batch whose time per row is within ``tolerance`` of the best measured."""
    if not timings:
        return max_batch
    per_row = {b: t / b for b, t in timings.items()}
    best = min(per_row.values())
    return min(b for b, t in per_row.items() if t <= best * (1 + tolerance))
