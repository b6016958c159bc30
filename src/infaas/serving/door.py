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

A third measure is per model, and sheds what the workers behind the door would refuse anyway
(:class:`Throttle`): while a model's workers refuse some of what reaches them, the door refuses at
random (429, body unread) the share of new requests past ``door_throttle_k`` times the rate they
accept: adaptive throttling, as Google's SRE book has clients do, done at the server's door. A
refusal here costs the frontend a fraction of one the worker's admission makes, after the body was
read and decoded and the request sent; bench/overload measured it on a
frontend-bound model (a small one at hundreds of requests a second), where those refusals alone
saturated the frontend at 3x capacity and every answer came back late. It acts only while the
frontend is busy (its process used half a core or more over the last second): otherwise passing a
request costs next to nothing, and the worker's answer is exact where the throttle's estimate lags
(at tens of requests a second it refused a quarter of the requests right after an overload ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter

from infaas.errors import Overloaded, Unavailable

_PERIOD_S = 0.02
_WINDOW_S = 1.0  # lag is the smallest wake-up delay of this long


class LoopLag:
    """How late the event loop runs its callbacks now (seconds), from a task that ticks every 20 ms."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.samples: deque[tuple[float, float]] = deque()  # (when, how late) of each wake-up
        self.cpu: deque[tuple[float, float]] = deque()  # (when, the process's CPU seconds) at each wake-up
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
            self.cpu.append((now, time.process_time()))
            for kept in (self.samples, self.cpu):
                while kept and kept[0][0] < now - _WINDOW_S:
                    kept.popleft()

    def busy(self) -> float:
        """The share of one core the frontend's process used over the last second (all its threads)."""
        if len(self.cpu) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.cpu[0], self.cpu[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

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


_THROTTLE_TAU_S = 0.5  # the throttle's memory: its counts fade by e every this long
_THROTTLE_MAX_SHARE = 0.9  # it never refuses more: what gets through tells it the workers recovered
_THROTTLE_MIN_REFUSED = 1.5  # under two recent refusals (faded) is no evidence: after a quiet spell all pass
_THROTTLE_KEYS = 4096  # models it keeps counts for (a bound: the least recently seen are forgotten)


class Throttle:
    """Per model, three exponentially fading counts (time constant 0.5 s): requests passed to the
    workers, those the workers then refused as overloaded (429), and those refused here; and the
    share of new requests to refuse: ``(refused here + k * refused there - (k - 1) * passed) /
    (passed + refused here + 1)``, between 0 and 0.9. That is the share of arrivals past ``k`` times
    the rate the workers accept (passed - refused there), counted when the door passes a request and
    when a refusal comes back (milliseconds later), so it does not lag the way counting accepts at
    their answer would. While the workers refuse nothing it refuses nothing, bursts included; at 3x a
    model's capacity, k = 1.5 refuses half at the door and lets 1.5x through, so the workers stay
    full and the frontend pays for a third of the refusals instead of all of them."""

    def __init__(self, k: float, min_busy: float = 0.5, random_draw=random.random) -> None:
        self.k = k
        self.min_busy = min_busy  # it refuses only while the frontend used this share of a core lately
        self._draw = random_draw
        self._counts: dict[str, list[float]] = {}  # model -> [passed, refused there, refused here, when]

    def _faded(self, key: str, now: float) -> list[float]:
        counts = self._counts.pop(key, None) or [0.0, 0.0, 0.0, now]
        fade = math.exp(-max(0.0, now - counts[3]) / _THROTTLE_TAU_S)
        counts[0], counts[1], counts[2], counts[3] = counts[0] * fade, counts[1] * fade, counts[2] * fade, now
        self._counts[key] = counts  # most recently seen last
        if len(self._counts) > _THROTTLE_KEYS:
            del self._counts[next(iter(self._counts))]
        return counts

    def share(self, key: str, now: float) -> float:
        """The share of new requests for ``key`` to refuse now."""
        passed, refused, here, _ = self._faded(key, now)
        if refused < _THROTTLE_MIN_REFUSED:
            return 0.0
        share = (here + self.k * refused - (self.k - 1) * passed) / (passed + here + 1.0)
        return min(_THROTTLE_MAX_SHARE, max(0.0, share))

    def arrived(self, key: str, now: float, busy: float = 1.0) -> float | None:
        """One request for ``key``: its refusal share when the draw refuses it (counted), else None
        (counted as passed). ``busy``: the share of a core the frontend used lately; under
        ``min_busy`` every request passes, whatever the share (still counted)."""
        share = self.share(key, now)
        refuse = busy >= self.min_busy and share > 0 and self._draw() < share
        self._counts[key][2 if refuse else 0] += 1.0
        return share if refuse else None

    def answered(self, key: str, now: float, accepted: bool) -> None:
        """A request for ``key`` that passed was answered: ``accepted`` unless refused as overloaded."""
        if not accepted:
            self._faded(key, now)[1] += 1.0


def accepted_status(status: int) -> bool:
    """Whether an answer's HTTP status says its workers accepted it: anything but 429 (refused as
    overloaded). A 503 (no worker, a crash, a deadline) is not load the door could shed: throttling
    on it would answer "overloaded" for a worker that is restarting."""
    return status != 429


class Door:
    """One door's admission: its requests in flight and the loop's lag, against the settings' limits,
    and each model's throttle (shared by the doors: one model's workers serve both)."""

    def __init__(
        self,
        name: str,
        max_inflight: int,
        max_lag_ms: float,
        lag: LoopLag,
        refused: Counter | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.name = name
        self.max_inflight = max_inflight
        self.max_lag_s = max_lag_ms / 1000
        self.lag = lag
        self.inflight = 0
        self.refused = refused
        self.throttle = throttle

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

    def enter(self, now: float, model: str = "") -> None:
        """Take a place for one inference request for ``model`` (give it back with :meth:`leave`), or
        raise :class:`Unavailable` or :class:`Overloaded` (counted, with the reason and a retry hint)
        when the door refuses it."""
        refused = self.refuse(now)
        if refused is not None:
            self.count(refused[0])
            raise Unavailable(refused[1], retry_after_s=1.0)
        share = None
        if self.throttle is not None:  # only a busy frontend gains from refusing what its workers would
            share = self.throttle.arrived(model, now, self.lag.busy())
        if share is not None:
            self.count("throttle")
            raise Overloaded(
                f"model '{model}' is overloaded: its workers refuse part of what reaches them, so the door refuses "
                f"{share:.0%} of its new requests before reading them (door_throttle_k {self.throttle.k:g}); "
                "retry shortly",
                retry_after_s=1.0,
            )
        self.inflight += 1

    def leave(self, model: str = "", accepted: bool = True) -> None:
        """Give back a place; ``accepted``: the request was not refused as overloaded (429)."""
        self.inflight -= 1
        if self.throttle is not None:
            self.throttle.answered(model, time.monotonic(), accepted)

    @contextlib.contextmanager
    def admit(self, now: float, model: str = "") -> Iterator[None]:
        self.enter(now, model)
        accepted = False
        try:
            yield
            accepted = True
        except Overloaded:  # the workers' (or the selection's) refusal for load
            raise
        except BaseException:
            accepted = True  # a bad request, a crash, a deadline or a cancelled call: not load to shed
            raise
        finally:
            self.leave(model, accepted)


def refusal_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "infaas_door_refused",
        "Requests refused at a door before their body was read, by reason (inflight, loop_lag, throttle, expired)",
        ["door", "reason"],
        registry=registry,
    )
