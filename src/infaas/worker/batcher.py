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
  latency than batching saves);
- otherwise ``wait_s`` says how long until one of those becomes true.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.predict_s = predict_s
        self.slo_wait = slo_wait
        self._queue: deque[Pending] = deque()
        self.rows_queued = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: Pending) -> None:
        """Queue in FIFO order, except that online requests go ahead of queued offline (job) ones."""
        self.rows_queued += item.rows
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
        self.rows_queued = 0
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
            latest = min(deadlines) - self.predict_s(rows)  # leave while the most urgent can still make it
            if self.slo_wait:
                due, waiting = min(latest, head.arrival + self.predict_s(self.max_batch)), True
            else:
                due = min(due, latest)
        if full or not waiting or now >= due:
            for i in reversed(chosen):
                del self._queue[i]
            self.rows_queued -= rows
            formed.batch = members
        else:
            formed.wait_s = due - now
        return formed

    def _expire(self, now: float, out: list[Pending]) -> None:
        if not any(p.deadline is not None for p in self._queue):
            return
        keep: deque[Pending] = deque()
        for item in self._queue:
            late = item.deadline is not None and now + self.predict_s(item.rows) > item.deadline
            if late and item.drop_late:
                out.append(item)
                self.rows_queued -= item.rows
            else:
                keep.append(item)
        self._queue = keep
