"""The simulator's engine: a clock, an event queue, and simulated replicas that batch with the real
:class:`~infaas.worker.batcher.BatchQueue`.

Everything runs on simulated time: an event is a (time, sequence, action) on a heap; an action may
schedule more. Randomness comes from one seeded :class:`random.Random`, so a run is a function of
its inputs and its seed.

A :class:`SimReplica` is one variant hosted on a simulated worker. It admits, queues, forms batches
and drops late requests by calling the worker's own ``BatchQueue`` (``admit``, ``put``, ``next``,
``observe``) with the simulated ``now``: the batching is the real code, not a model of it. A batch's
service time is drawn from the variant's measured per-batch table (:class:`ServiceTime`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from infaas.worker.batcher import BatchQueue, Pending

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


class EventQueue:
    """Simulated time: actions run in time order (ties in the order they were scheduled)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, t: float, action: Callable[[], None]) -> None:
        if t < self.now:
            raise ValueError(f"cannot schedule at {t:.6f} s, before now ({self.now:.6f} s)")
        heapq.heappush(self._heap, (t, next(self._seq), action))

    def after(self, delay_s: float, action: Callable[[], None]) -> None:
        self.at(self.now + max(0.0, delay_s), action)

    def run(self, until: float = math.inf) -> int:
        """Run every event up to ``until`` (inclusive); returns how many ran."""
        ran = 0
        while self._heap and self._heap[0][0] <= until:
            t, _, action = heapq.heappop(self._heap)
            self.now = t
            action()
            ran += 1
        if until != math.inf:
            self.now = max(self.now, until)
        return ran

    def __len__(self) -> int:
        return len(self._heap)


@dataclass(frozen=True)
class ServiceTime:
    """A batch's service time from a measured table: batch size -> (p50 ms, p99 ms).

    The time of a batch is drawn from a lognormal whose median is the table's p50 and whose 99th
    percentile is its p99 (sigma = ln(p99 / p50) / z99); equal p50 and p99 give a constant time.
    Between measured batch sizes both percentiles are interpolated linearly; past the largest, the
    largest is scaled by rows.
    """

    table: Mapping[int, tuple[float, float]]

    def __post_init__(self) -> None:
        if not self.table:
            raise ValueError("a service time needs at least one measured batch size")
        for b, (p50, p99) in self.table.items():
            if b < 1 or p50 <= 0 or p99 < p50:
                raise ValueError(f"batch {b}: p50 {p50} ms and p99 {p99} ms must satisfy 0 < p50 <= p99")

    @classmethod
    def of_profile(cls, profile, max_batch: int) -> ServiceTime:
        """A profiled variant's batch times up to its ``max_batch`` (p99 never under p50; a profile
        with no measured batch size in range is its fitted batch-1 time)."""
        table = {
            b: (p50, max(p50, profile.latency_p99_ms.get(b, p50)))
            for b, p50 in profile.latency_p50_ms.items()
            if b <= max_batch
        } or {1: (profile.predict_ms(1), profile.predict_ms(1))}
        return cls(table)

    def percentiles_ms(self, rows: int) -> tuple[float, float]:
        sizes = sorted(self.table)
        if rows in self.table:
            return self.table[rows]
        if rows <= sizes[0]:
            return self.table[sizes[0]]
        if rows >= sizes[-1]:
            p50, p99 = self.table[sizes[-1]]
            return p50 * rows / sizes[-1], p99 * rows / sizes[-1]
        hi = bisect.bisect_left(sizes, rows)
        a, b = sizes[hi - 1], sizes[hi]
        w = (rows - a) / (b - a)
        (a50, a99), (b50, b99) = self.table[a], self.table[b]
        return a50 + w * (b50 - a50), a99 + w * (b99 - a99)

    def median_s(self, rows: int) -> float:
        return self.percentiles_ms(rows)[0] / 1000

    def draw_s(self, rows: int, rng: random.Random) -> float:
        p50, p99 = self.percentiles_ms(rows)
        sigma = math.log(p99 / p50) / _Z99
        return p50 / 1000 * (math.exp(rng.gauss(0.0, sigma)) if sigma > 0 else 1.0)


@dataclass
class Outcome:
    """What became of one request."""

    arrival: float
    rows: int
    deadline: float | None
    status: str = "queued"  # served, refused (at admission), expired (dropped late in the queue)
    started: float | None = None  # when its batch began
    finished: float | None = None
    batch_size: int = 0

    @property
    def wait_s(self) -> float | None:
        return None if self.started is None else self.started - self.arrival

    @property
    def latency_s(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival


@dataclass
class SimReplica:
    """One variant on a simulated worker: the real batch queue, ``instances`` batches at a time."""

    events: EventQueue
    service: ServiceTime
    rng: random.Random
    max_batch: int = 1
    max_delay_s: float = 0.0
    instances: int = 1
    admission: bool = True
    max_wait_s: float | None = None
    outcomes: list[Outcome] | None = field(default_factory=list)  # None: not kept (``done`` is told)
    # the share of a core this replica's batches get when one starts (1: alone; less: time-shared)
    speed: Callable[[], float] | None = None
    done: Callable[[list[Outcome]], None] | None = None  # told of each batch's outcomes as it ends

    def __post_init__(self) -> None:
        self.queue = BatchQueue(
            self.max_batch,
            self.max_delay_s,
            predict_s=self.service.median_s,
            slo_wait=True,
            max_wait_s=self.max_wait_s,
            instances=self.instances,
            clock=lambda: self.events.now,
            admission=self.admission,
        )
        self.running: list[float] = []  # when each running batch ends
        self._wake_at: float | None = None
        # cumulative counters, as a worker reports them (``stats``)
        self.arrived_rows = self.completed_rows = self.batches = 0
        self.arrived_requests = 0
        # refused by the selection while this was busy (what a frontend's notice says)
        self.turned_away_requests = self.turned_away_rows = 0
        self.busy_s = 0.0
        self.latencies_ms: list[float] = []  # since the last ``stats``
        self.dropped_rows = 0  # expired in the queue

    @property
    def in_flight_rows(self) -> int:
        """Rows queued or running: what a frontend counts as outstanding there."""
        return self.arrived_rows - self.completed_rows - self.dropped_rows

    def stats(self) -> dict:
        """This replica's counters in the worker's report format (latencies since the last call)."""
        lat, self.latencies_ms = self.latencies_ms, []
        lat.sort()
        return {
            "arrived_rows": self.arrived_rows,
            "arrived_requests": self.arrived_requests,
            "turned_away_rows": self.turned_away_rows,
            "turned_away_requests": self.turned_away_requests,
            "completed_rows": self.completed_rows,
            "offline_rows": 0,
            "batches": self.batches,
            "queued_rows": self.queue.rows_queued,
            "busy_s": self.busy_s,
            "instances": self.instances,
            "p50_ms": quantile(lat, 0.50),
            "p99_ms": quantile(lat, 0.99),
        }

    def resize(self, instances: int) -> None:
        """Run ``instances`` batches at a time from now (running ones finish)."""
        self.instances = self.queue.instances = max(1, instances)
        self._dispatch()

    def submit(self, rows: int, deadline: float | None = None) -> Outcome:
        """A request arrives now; it is refused at once, or queued and served (or dropped) later."""
        now = self.events.now
        return self.enqueue(Outcome(now, rows, deadline))

    def enqueue(self, out: Outcome) -> Outcome:
        """Queue ``out`` (arrived at ``out.arrival``, perhaps while this replica loaded) now."""
        now = self.events.now
        if self.outcomes is not None:
            self.outcomes.append(out)
        busy = min(self.running) - now if len(self.running) >= self.instances else 0.0
        if self.queue.admit(out.rows, 0, out.deadline, now, busy_s=busy) is not None:
            out.status, out.finished = "refused", now
            self._finish([out])
            return out
        self.arrived_rows += out.rows
        self.arrived_requests += 1
        self.queue.put(Pending(key=out, rows=out.rows, arrival=now, deadline=out.deadline), running=bool(self.running))
        self._dispatch()
        return out

    def _finish(self, outs: list[Outcome]) -> None:
        if outs and self.done is not None:
            self.done(outs)

    def _dispatch(self) -> None:
        """Start batches while an instance is free, as the worker's executor does."""
        now = self.events.now
        while len(self.running) < self.instances:
            formed = self.queue.next(now)
            for late in formed.expired:
                late.key.status, late.key.finished = "expired", now
                self.dropped_rows += late.rows
            self._finish([late.key for late in formed.expired])
            if not formed.batch:
                if formed.wait_s is not None:
                    self._wake(now + formed.wait_s)
                return
            rows = formed.rows
            took = self.service.draw_s(rows, self.rng) / (self.speed() if self.speed is not None else 1.0)
            ends = now + took
            self.running.append(ends)
            for member in formed.batch:
                member.key.started, member.key.batch_size = now, rows
            self.events.at(
                ends, lambda batch=formed.batch, ends=ends, rows=rows, took=took: self._done(batch, ends, rows, took)
            )

    def _done(self, batch: list[Pending], ends: float, rows: int, took: float) -> None:
        self.running.remove(ends)
        self.queue.observe(rows, took)
        self.completed_rows += rows
        self.batches += 1
        self.busy_s += took
        for member in batch:
            member.key.status, member.key.finished = "served", ends
            self.latencies_ms.append((ends - member.key.arrival) * 1000)
        self._finish([m.key for m in batch])
        self._dispatch()

    def _wake(self, at: float) -> None:
        if self._wake_at is not None and self._wake_at <= at and self._wake_at >= self.events.now:
            return  # an earlier wake-up is already scheduled

        def wake() -> None:
            self._wake_at = None
            self._dispatch()

        self._wake_at = at
        self.events.at(at, wake)


def quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank); None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def poisson_arrivals(rate_per_s: float, seconds: float, rng: random.Random) -> list[float]:
    """Arrival times of a Poisson process of ``rate_per_s`` over ``seconds``."""
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= seconds:
            return out
        out.append(t)


@dataclass(eq=False)
class Request(Outcome):
    """A simulated request of one app: where it went, what was predicted, how it ended."""

    app: str = ""
    variant: str = ""
    worker: str = ""
    predicted_ms: float | None = None
    learn: bool = False
    due: float | None = None  # when the app's latency objective runs out
    violation: str | None = None
