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
(:class:`Throttle`): while a model's workers refuse some of what reaches them, the door holds the
model's requests in flight to a limit learned from their answers (their refusals, their queue
waits), and refuses the rest (429, body unread). A refusal here costs the frontend a tenth of one the worker's admission makes (0.16 against
1.45 ms of its CPU, measured with bench/overload's frontend-bound model), after the body was read and
decoded and the request sent; there, those refusals alone saturated the shared cores at 3x capacity
and every answer came back late. It acts only while the frontend is busy (its process used half a
core or more over the last second): otherwise passing a request costs next to nothing, and the
worker's answer is exact where a learned limit lags (at tens of requests a second an earlier version
refused a quarter of the requests right after an overload ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

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


_THROTTLE_TAU_S = 0.5  # the throttle's memory of refusals: its count fades by e every this long
_THROTTLE_MIN_REFUSED = 1.5  # under two recent refusals (faded) it is off: after a quiet spell all pass
_THROTTLE_BACKOFF = 0.9  # a refusal by the workers cuts the limit to this share of what was in flight
_THROTTLE_MIN_CUT = 0.5  # a standing queue cuts the limit by target / wait, never below half of it
_TARGET_MIN_S = 0.02  # the least queue wait the limit aims under (the workers' own standing target is 5 ms)
_THROTTLE_KEYS = 4096  # models it keeps state for (a bound: the least recently seen are forgotten)


@dataclass(slots=True)
class Passage:
    """A request the door let through; its handler fills in what the workers said of it."""

    queue_s: float | None = None  # how long it waited in its worker's queue
    compute_s: float | None = None  # how long its batch computed

    def took(self, params: dict) -> None:
        """Read the worker's account from an answer's parameters (``queue_ms``, ``compute_ms``)."""
        if params.get("queue_ms") is not None:
            self.queue_s = params["queue_ms"] / 1000
        if params.get("compute_ms") is not None:
            self.compute_s = params["compute_ms"] / 1000


@dataclass(slots=True)
class _Model:
    inflight: int = 0  # requests for the model passed by the doors and not yet answered
    limit: float | None = None  # how many may be in flight while it is on (None: not learned yet)
    refused: float = 0.0  # refusals, by its workers (429) or by the doors, faded
    at: float = 0.0  # when ``refused`` was last faded
    since_cut: int = 0  # answers since the limit was last cut (one cut per half a limit of answers)


class Throttle:
    """Per model, a limit on requests in flight through the doors, on while the model's workers (or
    the doors) refused a request for it lately (a faded count, time constant 0.5 s, of at least 1.5).
    Then a new request is refused here (429, body unread) while as many as the limit are in flight.
    Each answer frees a place at once, so the workers stay as full as they take, and what they would
    refuse is refused here, at a tenth of the frontend's cost.

    The limit is learned as TCP Vegas and adaptive concurrency limits learn a window, from what the
    answers say: the first refusal by the workers (429) sets it to 0.9 of what was in flight then;
    an answer that waited in its worker's queue longer than the target (two of its batches' compute,
    at least 20 ms) cuts it by target / wait (at most by half); an answer that waited less, while the
    limit bound, raises it by one a limit's worth of answers. At most one cut for half a limit's worth
    of answers: one queue's answers are one signal. So while the doors shed a model's load, its
    worker's queue holds about two batches: enough to stay busy, short enough that no answer comes
    back late. That is the CoDel rule the workers' admission follows too, which they cannot apply
    here: refused upstream, they see no overload. The workers' own target is 5 ms; here a queue that
    short emptied whenever the frontend fell behind for a moment (bench/overload at 3x: 0.74-1.03x
    of capacity with 5 ms, 0.90-1.02x with 20 ms, two runs of each encoding).

    The first version refused a random share of arrivals past 1.5x the rate the workers accepted. On a
    frontend-bound model (bench/overload ``--channels 32``) it swung every few seconds between refusing
    90 % (a queue filled to its deadline refuses everything while it drains, read as "accepts
    nothing") and passing everything, and while it passed 1.5x, the workers' refusals of the third
    too many cost the shared cores a third of their time."""

    def __init__(self, min_busy: float = 0.5) -> None:
        self.min_busy = min_busy  # it refuses only while the frontend used this share of a core lately
        self._models: dict[str, _Model] = {}

    def _model(self, key: str, now: float) -> _Model:
        m = self._models.pop(key, None) or _Model(at=now)
        m.refused *= math.exp(-max(0.0, now - m.at) / _THROTTLE_TAU_S)
        m.at = now
        self._models[key] = m  # most recently seen last
        if len(self._models) > _THROTTLE_KEYS:
            del self._models[next(iter(self._models))]
        return m

    def limit(self, key: str, now: float) -> float | None:
        """The limit on ``key``'s requests in flight now; None while the throttle is off for it."""
        m = self._model(key, now)
        return m.limit if m.refused >= _THROTTLE_MIN_REFUSED and m.limit is not None else None

    def arrived(self, key: str, now: float, busy: float = 1.0) -> tuple[int, float] | None:
        """One request for ``key``: (in flight, limit) when it is refused (counted), else None (it is
        in flight until :meth:`answered`). ``busy``: the share of a core the frontend used lately;
        under ``min_busy`` every request passes (refusing here would save next to nothing)."""
        limit = self.limit(key, now)
        m = self._models[key]
        if limit is not None and busy >= self.min_busy and m.inflight >= limit:
            m.refused += 1.0
            return m.inflight, limit
        m.inflight += 1
        return None

    def answered(self, key: str, now: float, accepted: bool, passage: Passage | None = None) -> None:
        """A request for ``key`` that passed was answered: ``accepted`` unless refused as overloaded;
        ``passage``: what its worker said of it (its queue wait, its batch's compute)."""
        m = self._model(key, now)
        inflight, m.inflight = m.inflight, max(0, m.inflight - 1)
        m.since_cut += 1
        if not accepted:
            m.refused += 1.0
            self._cut(m, min(m.limit or inflight, inflight) * _THROTTLE_BACKOFF)
            return
        if m.limit is None or passage is None or passage.queue_s is None:
            return
        target = max(_TARGET_MIN_S, 2 * (passage.compute_s or 0.0))
        if passage.queue_s > target:
            self._cut(m, m.limit * max(_THROTTLE_MIN_CUT, target / passage.queue_s))
        elif inflight >= m.limit - 1:
            m.limit += 1.0 / m.limit

    @staticmethod
    def _cut(m: _Model, to: float) -> None:
        if m.limit is None or m.since_cut >= m.limit / 2:
            m.limit = max(1.0, to)
            m.since_cut = 0


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

    def enter(self, now: float, model: str = "") -> Passage:
        """Take a place for one inference request for ``model`` (give it back with :meth:`leave`), or
        raise :class:`Unavailable` or :class:`Overloaded` (counted, with the reason and a retry hint)
        when the door refuses it."""
        refused = self.refuse(now)
        if refused is not None:
            self.count(refused[0])
            raise Unavailable(refused[1], retry_after_s=1.0)
        held = None  # (in flight, limit) when the model's throttle refuses it
        if self.throttle is not None:  # only a busy frontend gains from refusing what its workers would
            held = self.throttle.arrived(model, now, self.lag.busy())
        if held is not None:
            self.count("throttle")
            raise Overloaded(
                f"model '{model}' is overloaded: its workers refused requests for it lately, and {held[0]} are "
                f"in flight, the most they take now ({held[1]:.1f}, learned from their answers); refused before "
                "reading it; retry shortly",
                retry_after_s=1.0,
            )
        self.inflight += 1
        return Passage()

    def leave(self, model: str = "", accepted: bool = True, passage: Passage | None = None) -> None:
        """Give back a place; ``accepted``: the request was not refused as overloaded (429);
        ``passage``: what :meth:`enter` gave, as its handler filled it in."""
        self.inflight -= 1
        if self.throttle is not None:
            self.throttle.answered(model, time.monotonic(), accepted, passage)

    @contextlib.contextmanager
    def admit(self, now: float, model: str = "") -> Iterator[Passage]:
        passage = self.enter(now, model)
        accepted = False
        try:
            yield passage
            accepted = True
        except Overloaded:  # the workers' (or the selection's) refusal for load
            raise
        except BaseException:
            accepted = True  # a bad request, a crash, a deadline or a cancelled call: not load to shed
            raise
        finally:
            self.leave(model, accepted, passage)


def refusal_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "infaas_door_refused",
        "Requests refused at a door before their body was read, by reason (inflight, loop_lag, throttle, expired)",
        ["door", "reason"],
        registry=registry,
    )
