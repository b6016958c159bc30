"""Per-query selection: which loaded variant, on which worker, and why.

Pure: the caller passes a snapshot of candidates and their live load; nothing
here reads a clock, a socket or the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infaas.registry.types import Profile, Variant


@dataclass(frozen=True, slots=True)
class Candidate:
    """A loaded variant and, for each worker hosting it, that worker's outstanding requests."""

    variant: Variant
    workers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    variant: Variant
    worker: str
    reason: str


class NoCandidate(Exception):
    """Nothing loaded can take the request; the message says why."""


def _accuracy_text(v: Variant) -> str:
    return "unknown accuracy" if v.accuracy is None else f"accuracy {v.accuracy:.3f} ({v.accuracy_source})"


def select_loaded(candidates: list[Candidate], rows: int, scope: str) -> Decision:
    """Most accurate loaded variant whose max batch takes ``rows``; then its least-loaded worker."""
    fits = [c for c in candidates if c.workers and c.variant.max_batch >= rows]
    if not fits:
        if any(c.workers for c in candidates):
            biggest = max(c.variant.max_batch for c in candidates if c.workers)
            raise NoCandidate(f"batch of {rows} exceeds the largest max batch loaded for {scope} ({biggest})")
        raise NoCandidate(f"no variant of {scope} is loaded")
    best = max(fits, key=lambda c: (
        -1.0 if c.variant.accuracy is None else c.variant.accuracy,
        -sum(n for _, n in c.workers),
    ))  # fmt: skip
    worker, queued = min(best.workers, key=lambda w: w[1])
    why = (
        f"{scope}: {best.variant.name} is the most accurate loaded variant that takes a batch of "
        f"{rows} ({_accuracy_text(best.variant)}); worker {worker} has the fewest requests in flight ({queued})"
    )
    if len(fits) == 1:
        why = (f"{scope}: {best.variant.name} is the only loaded variant that takes a batch of {rows}; "
               f"worker {worker} has the fewest requests in flight ({queued})")  # fmt: skip
    return Decision(best.variant, worker, why)


# ---- objective-driven selection (model-less queries) ------------------------------------------
@dataclass(frozen=True, slots=True)
class Objective:
    """What a query asks for. ``max_cost`` is USD per 1000 inferences."""

    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost: float | None = None
    allow_estimated: bool = True

    @property
    def empty(self) -> bool:
        return self.latency_ms is None and self.min_accuracy is None and self.max_cost is None


@dataclass(frozen=True, slots=True)
class Option:
    """A ready variant, its profile, and each worker that has it loaded with the rows in flight there."""

    variant: Variant
    profile: Profile | None
    workers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Choice:
    variant: Variant
    worker: str | None  # None: not loaded anywhere, load it first (cold start)
    predicted_ms: float | None
    cost_per_1k: float | None
    reason: str


class Unreachable(Exception):
    """No variant can meet the objective; the message names the closest achievable option."""


def predict_ms(profile: Profile, max_batch: int, rows: int, in_flight: int) -> float:
    """Queue wait for the rows ahead (whole batches at the profile's rate) plus this batch."""
    wait = 0.0
    if in_flight:
        batches = -(-in_flight // max_batch)
        wait = batches * profile.predict_ms(min(in_flight, max_batch))
    return wait + profile.predict_ms(min(rows, max_batch))


def _acc(v: Variant) -> str:
    return "unknown" if v.accuracy is None else f"{v.accuracy:.3f} ({v.accuracy_source})"


def _cost(o: Option) -> float:
    return o.profile.cost_per_1k if o.profile is not None else float("inf")


def select(objective: Objective, options: list[Option], rows: int, scope: str) -> Choice:
    """Convenience form of :func:`select_sorted`: splits loaded from cold and sorts both by cost."""
    ordered = sorted(options, key=_cost)
    live = {o.variant.name: o.workers for o in ordered if o.workers}
    return select_sorted(objective, [o for o in ordered if o.workers], ordered, rows, scope, live.get)


def select_sorted(
    objective: Objective, loaded: list[Option], ordered: list[Option], rows: int, scope: str,
    live: Callable[[str], tuple[tuple[str, int], ...] | None],
) -> Choice:
    """Cheapest variant that meets the objective: loaded ones first (queue wait counted), then cold
    ones (load time counted against the latency objective). ``loaded`` and ``ordered`` (every
    ready variant of the scope) come sorted by cost, so the first fit wins and the scan stops
    there. ``live(name)`` reads the (worker, rows in flight) snapshot of a loaded variant only when
    the scan reaches it. No clock, no I/O."""
    lat, floor, ceiling = objective.latency_ms, objective.min_accuracy, objective.max_cost

    def admissible(o: Option) -> bool:
        v = o.variant
        if v.max_batch < rows or v.status != "ready":
            return False
        if floor is not None and (v.accuracy is None or v.accuracy < floor
                                  or (v.accuracy_source == "estimated" and not objective.allow_estimated)):  # fmt: skip
            return False
        return ceiling is None or (o.profile is not None and o.profile.cost_per_1k <= ceiling)

    hosted = set()
    for o in loaded:
        workers = live(o.variant.name)
        if not workers:
            continue
        hosted.add(o.variant.name)
        if not admissible(o):
            continue
        best = None
        for worker, in_flight in workers:
            pred = predict_ms(o.profile, o.variant.max_batch, rows, in_flight) if o.profile else None
            if lat is not None and (pred is None or pred > lat):
                continue
            if best is None or (pred or 0.0) < (best[1] or 0.0):
                best = (worker, pred)
        if best is not None:
            return _choice(objective, o, best[0], best[1], scope)
    for o in ordered:
        if o.profile is None or o.variant.name in hosted or not admissible(o):
            continue
        pred = o.profile.load_time_ms + o.profile.predict_ms(min(rows, o.variant.max_batch))
        if lat is None or pred <= lat:
            return _choice(objective, o, None, pred, scope)
    everything = [Option(o.variant, o.profile, live(o.variant.name) or ()) for o in ordered]
    everything = [o for o in everything if o.variant.max_batch >= rows and o.variant.status == "ready"]
    if not everything:
        raise Unreachable(f"{scope}: no ready variant takes a batch of {rows}")
    raise Unreachable(_why_not(objective, everything, scope, rows))


def _choice(objective: Objective, o: Option, worker: str | None, pred: float | None, scope: str) -> Choice:
    v, cost = o.variant, _cost(o)
    if worker is not None:
        where = f"loaded on {worker}, predicted {pred:.2f} ms with the queue there" if pred is not None else \
            f"loaded on {worker}, not profiled yet"
    else:
        where = f"not loaded: cold start, predicted {pred:.1f} ms including {o.profile.load_time_ms:.0f} ms to load"
    reason = (f"{scope}: {v.name} is the cheapest variant meeting {_objective_text(objective)} "
              f"(${cost:.3g} per 1k, accuracy {_acc(v)}; {where})")  # fmt: skip
    return Choice(v, worker, pred, None if cost == float("inf") else cost, reason)


def _objective_text(o: Objective) -> str:
    parts = []
    if o.latency_ms is not None:
        parts.append(f"latency_ms {o.latency_ms:g}")
    if o.min_accuracy is not None:
        parts.append(f"min_accuracy {o.min_accuracy:g}")
    if o.max_cost is not None:
        parts.append(f"max_cost ${o.max_cost:g} per 1k")
    return ", ".join(parts) or "no objective"


def _why_not(objective: Objective, options: list[Option], scope: str, rows: int | None = None) -> str:
    """Name the closest achievable option for the objective that cannot be met."""
    if objective.min_accuracy is not None:
        known = [o for o in options if o.variant.accuracy is not None and
                 (objective.allow_estimated or o.variant.accuracy_source != "estimated")]  # fmt: skip
        top = [o for o in known if o.variant.accuracy >= objective.min_accuracy]
        if not top:
            if not known:
                return f"min_accuracy {objective.min_accuracy:g} unreachable for {scope}: no variant has a known accuracy"
            b = max(known, key=lambda o: o.variant.accuracy)
            return (f"min_accuracy {objective.min_accuracy:g} unreachable for {scope}: best is "
                    f"{b.variant.accuracy:.3f} ({b.variant.architecture}, {b.variant.name})")  # fmt: skip
        options = top
    if objective.max_cost is not None:
        priced = [o for o in options if o.profile is not None]
        if not any(o.profile.cost_per_1k <= objective.max_cost for o in priced):
            if not priced:
                return f"max_cost ${objective.max_cost:g} per 1k unreachable for {scope}: no variant is profiled yet"
            c = min(priced, key=lambda o: o.profile.cost_per_1k)
            return (f"max_cost ${objective.max_cost:g} per 1k unreachable for {scope}: cheapest that meets the "
                    f"other objectives is ${c.profile.cost_per_1k:.3g} per 1k ({c.variant.name})")  # fmt: skip
    timed = []
    for o in options:
        if o.profile is None:
            continue
        rows_ = rows or 1
        for _, in_flight in o.workers:
            timed.append((predict_ms(o.profile, o.variant.max_batch, rows_, in_flight), o, "loaded"))
        if not o.workers:
            timed.append((o.profile.load_time_ms + o.profile.predict_ms(min(rows_, o.variant.max_batch)), o, "cold"))
    if not timed:
        return f"latency_ms {objective.latency_ms:g} unreachable for {scope}: no variant is profiled yet"
    ms, o, state = min(timed, key=lambda t: t[0])
    return (f"latency_ms {objective.latency_ms:g} unreachable for {scope}: fastest is {ms:.2f} ms "
            f"({o.variant.name}, {state})")
