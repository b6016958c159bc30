"""What is learned about each (worker, variant) replica to predict a request's latency there.

Explicit state, no I/O and no clock: the router feeds it each answer's timings, the placement
each load's batching, and asks it for the :data:`~infaas.policy.select.Slot` the selection reads.
The simulator drives the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infaas.policy.select import Slot, drain_ms
from infaas.registry.types import Profile, Variant, decayed

Key = tuple[str, str]  # (worker, variant)
PROBE_S = 2.0  # the least time between two probes of one idle replica the selection refuses


def ewma(values: dict, key: Any, x: float, alpha: float, start: float | None = None) -> None:
    """Move ``values[key]`` toward ``x`` by ``alpha`` (the first sample sets it, unless ``start``)."""
    before = values.get(key, start)
    values[key] = x if before is None else before + alpha * (x - before)


def track_median(values: dict, key: Any, x: float) -> None:
    """Move ``values[key]`` toward the running median of ``x``: a step of 2 % of its size (plus
    2 us) up or down (the first sample sets it)."""
    before = values.get(key)
    if before is None:
        values[key] = x
    elif x != before:
        step = 0.02 * (abs(before) + 0.1)
        values[key] = before + (step if x > before else -step)


class LatencyModel:
    """Per replica: the batch size and runtime instances it runs with (from its load), the running
    median of what the profile-based prediction misses there (``overhead_ms``), and how much
    slower than profiled its batches ran there alone lately (``slowdown``, EWMA, bounded 0.5-10),
    decaying toward 1 while no answer refreshes it (``learned_at``, the caller's clock), as the
    worker's own copy does. The overhead does not fade: bench/workload measured it real (Lite0's
    ~20 ms on a slow CPU), and a faded one let requests through that came back late."""

    def __init__(self) -> None:
        self.batching: dict[Key, tuple[int, int]] = {}
        self.overhead_ms: dict[Key, float] = {}
        self.slowdown: dict[Key, float] = {}
        self.learned_at: dict[Key, float] = {}
        self.probed_at: dict[Key, float] = {}

    def loaded(self, worker: str, variant: str, preferred_batch: int, instances: int) -> None:
        """A load answered: the worker runs ``variant`` in batches of ``preferred_batch``, and its
        correction starts afresh there (a reloaded replica's worker does not remember it)."""
        self.batching[(worker, variant)] = (preferred_batch, instances)
        self.slowdown.pop((worker, variant), None)
        self.learned_at.pop((worker, variant), None)

    def resized(self, worker: str, variant: str, instances: int) -> None:
        """The replica now runs ``instances`` runtime instances (its batch size unchanged)."""
        batch, _ = self.batching.get((worker, variant), (0, 1))
        self.batching[(worker, variant)] = (batch, instances)

    def slot(
        self,
        worker: str,
        variant: str,
        in_flight: Mapping[str, int],
        profiles: Mapping[str, Profile],
        variants: Mapping[str, Variant],
        drains: dict[str, float] | None = None,
        running_ms: float | None = None,
        now: float | None = None,
    ) -> Slot:
        """How a loaded variant's next request would run on ``worker``, given the rows in flight
        there per hosted variant: its own rows, batch size, instances, learned correction and
        slowdown, and the work other variants have in flight on the same cores (``predict_ms``
        counts it as processor sharing, not in series). ``drains``: a memo of each hosted variant's
        work in flight, for a caller asking about several variants of one worker at one moment.
        ``running_ms``: how long the batch running there has run (None: not known; counted half done).
        ``now``: the caller's clock, for the slowdown's decay (None: as last learned)."""
        batch, instances = self.batching.get((worker, variant), (0, 1))
        return (
            worker,
            in_flight.get(variant, 0),
            batch or None,
            instances,
            self.overhead_ms.get((worker, variant), 0.0),
            self._slowdown((worker, variant), now),
            self._shared(worker, variant, in_flight, profiles, variants, drains),
            running_ms,
        )

    def _slowdown(self, key: Key, now: float | None) -> float:
        learned, at = self.slowdown.get(key, 1.0), self.learned_at.get(key)
        return learned if now is None or at is None else decayed(learned, now - at)

    def _shared(
        self,
        worker: str,
        variant: str,
        in_flight: Mapping[str, int],
        profiles: Mapping[str, Profile],
        variants: Mapping[str, Variant],
        drains: dict[str, float] | None = None,
    ) -> tuple[float, ...]:
        """The work (ms) each other variant on ``worker`` has in flight: it time-shares the cores."""
        out = []
        for other, rows in in_flight.items():
            if other == variant or not rows:
                continue
            if drains is not None and other in drains:
                out.append(drains[other])
                continue
            prof, var = profiles.get(other), variants.get(other)
            if prof is not None and var is not None:
                batch, instances = self.batching.get((worker, other), (0, 1))
                work = drain_ms(prof, var.max_batch, rows, batch or None, instances)
                out.append(work)
                if drains is not None:
                    drains[other] = work
        return tuple(out)

    def answered(
        self,
        key: Key,
        *,
        total_ms: float,
        queue_ms: float,
        compute_ms: float,
        batch_size: int,
        predicted_ms: float | None,
        from_slot: bool,
        alone: bool,
        profile: Profile | None,
        length: int | None = None,
        scale: float | None = None,
        now: float | None = None,
    ) -> None:
        """Learn from one answer. ``from_slot``: ``predicted_ms`` came from this replica's slot, so
        its residual is learned (its median, not its mean: bench/workload's totals are
        heavy-tailed, and a mean of total - queue - compute left digits 37 % low at the median, an
        EWMA of the residual 15 % high); otherwise only a first seed (the serving path's own
        overhead). ``alone``: no other variant had work on that worker, so the batch's compute
        time says how fast it runs there (time-sharing is predicted apart). ``scale``: the worker's own
        account of the same (its admission's correction, from batches that ran alone there), taken
        as is when the worker sends it, so the selection and the admission apply one correction.
        ``now``: when the answer came (the caller's clock); the slowdown fades from then."""
        extra = self.overhead_ms.get(key, 0.0)
        if predicted_ms is not None and from_slot:
            track_median(self.overhead_ms, key, total_ms - (predicted_ms - extra))
        elif key not in self.overhead_ms:  # one estimator per key: only a seed from other answers
            self.overhead_ms[key] = max(0.0, total_ms - queue_ms - compute_ms)
        if scale is not None:
            self.slowdown[key] = scale
        elif profile is not None and batch_size and compute_ms and alone:
            ratio = compute_ms / profile.cost_ms(batch_size, length)  # at the request's own length
            self.slowdown[key] = self._slowdown(key, now)
            ewma(self.slowdown, key, min(10.0, max(0.5, ratio)), 0.1)
        else:
            self.slowdown[key] = self._slowdown(key, now)  # (as it is now: its clock restarts)
        if now is not None:
            self.learned_at[key] = now

    def probe(self, key: Key, now: float) -> bool:
        """Whether to send a request the selection refused to ``key``'s replica, idle, anyway: what was
        learned there (the serving path's overhead, the slowdown) is refreshed only by answers, and a
        replica refused on it gets none (bench/workload: photos-fast refused from its first seconds to
        the end of a run, on 17-20 ms of overhead). At most one every ``PROBE_S`` (``now``: the
        caller's clock); the answer is learned from like any other."""
        if now - self.probed_at.get(key, float("-inf")) < PROBE_S:
            return False
        self.probed_at[key] = now
        return True

    def prune(self, keep: Callable[[str, str], bool]) -> None:
        """Forget what was learned about replicas for which ``keep(worker, variant)`` is false."""
        for learned in (self.batching, self.overhead_ms, self.slowdown, self.learned_at, self.probed_at):
            for key in [k for k in learned if not keep(*k)]:
                del learned[key]
