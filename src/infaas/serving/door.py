"""Admission at the door: what the frontend refuses before it reads a request's body.

The worker's admission control knows its queue; it cannot see the frontend itself falling behind.
Two measures here can, both cheap and taken as a request arrives:

- **requests in flight** through one door (REST or gRPC), bounded by ``max_inflight_requests``;
- **the event loop's sustained lag**: a task that asks to wake every 20 ms records how late it wakes.
  A loop late at every wake-up of the last second by more than ``max_loop_lag_ms`` (decoding,
  encoding, too many connections) answers every request late, and taking more only makes each
  later. One long call on the loop is not overload: the wake-ups around it are on time, so the
  requests that waited behind it are served. A loop that has not woken the monitor for a whole
  second is blocked now: that counts as lag too.

Past either limit, an inference request is refused at once (503, ``Retry-After``) with the reason,
and counted; health and metadata requests are always let through. Each request's arrival time is
taken here too, so its deadline counts the time it then waits inside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter

from infaas.errors import Unavailable

_PERIOD_S = 0.02
_WINDOW_S = 1.0  # lag is the smallest wake-up delay of this long


class LoopLag:
    """How late the event loop runs its callbacks now (seconds), from a task that ticks every 20 ms."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.samples: deque[tuple[float, float]] = deque()  # (when, how late) of each wake-up
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self.last_tick = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="infaas-loop-lag")

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(_PERIOD_S)
            now = time.monotonic()
            self.last_tick = now
            self.samples.append((now, max(0.0, now - asked - _PERIOD_S)))
            while self.samples and self.samples[0][0] < now - _WINDOW_S:
                self.samples.popleft()

    def lag(self, now: float) -> float:
        """The loop's sustained lateness (seconds): the smallest delay of the last second's wake-ups;
        with fewer than two of them, the loop has been blocked: how long since it last woke."""
        recent = [late for at, late in self.samples if at >= now - _WINDOW_S]
        if len(recent) >= 2:
            return min(recent)
        return max([now - self.last_tick - _PERIOD_S, *recent])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Door:
    """One door's admission: its requests in flight and the loop's lag, against the settings' limits."""

    def __init__(
        self, name: str, max_inflight: int, max_lag_ms: float, lag: LoopLag, refused: Counter | None = None
    ) -> None:
        self.name = name
        self.max_inflight = max_inflight
        self.max_lag_s = max_lag_ms / 1000
        self.lag = lag
        self.inflight = 0
        self.refused = refused

    def refuse(self, now: float) -> tuple[str, str] | None:
        """(reason label, message) when a new inference request must be refused now, else None."""
        self.lag.ensure_running()
        if self.inflight >= self.max_inflight:
            return "inflight", (
                f"the frontend has {self.inflight} requests in flight through its {self.name} door, its limit "
                f"(max_inflight_requests {self.max_inflight}); retry shortly or send to another frontend"
            )
        lag = self.lag.lag(now)
        if lag > self.max_lag_s:
            return "loop_lag", (
                f"the frontend is overloaded: its event loop runs {lag * 1000:.0f} ms late (limit "
                f"max_loop_lag_ms {self.max_lag_s * 1000:g}); refused before reading the request"
            )
        return None

    def count(self, reason: str) -> None:
        if self.refused is not None:
            self.refused.labels(self.name, reason).inc()

    def enter(self, now: float) -> None:
        """Take a place for one inference request (give it back with :meth:`leave`), or raise
        :class:`Unavailable` (counted, with the reason and a retry hint) when the door refuses it."""
        refused = self.refuse(now)
        if refused is not None:
            self.count(refused[0])
            raise Unavailable(refused[1], retry_after_s=1.0)
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1

    @contextlib.contextmanager
    def admit(self, now: float) -> Iterator[None]:
        self.enter(now)
        try:
            yield
        finally:
            self.leave()


def refusal_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "infaas_door_refused",
        "Requests refused at a door before their body was read, by reason (inflight, loop_lag, expired)",
        ["door", "reason"],
        registry=registry,
    )
