"""Per-query selection: which loaded variant, on which worker, and why. Pure: the caller passes a
snapshot of candidates and their live load; nothing here reads a clock, a socket or the registry."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from infaas.registry.types import Profile, Variant

# Where a loaded variant runs: (worker, rows in flight), or with how that worker runs it: (worker,
# rows in flight, batch size, runtime instances, overhead ms, measured / profiled batch time[, the
# ms of work other variants have in flight on that worker's cores[, how long its running batch has
# run (ms; None: not known)]])
Slot = (
    tuple[str, int]
    | tuple[str, int, int, int]
    | tuple[str, int, int, int, float, float]
    | tuple[str, int, int, int, float, float, tuple[float, ...]]
    | tuple[str, int, int, int, float, float, tuple[float, ...], float | None]
)


# ---- objective-driven selection (model-less queries) ------------------------------------------
@dataclass(frozen=True, slots=True)
class Objective:
    """What a query asks for. ``max_cost`` is USD per 1000 inferences."""

    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost: float | None = None
    allow_estimated: bool = True
    # not asked but carried: the request's dynamic-axis length (a sequence), which its cost depends on
    # (Profile.cost_ms); None for fixed shapes
    length: int | None = None

    @property
    def empty(self) -> bool:
        return self.latency_ms is None and self.min_accuracy is None and self.max_cost is None


@dataclass(frozen=True, slots=True)
class Option:
    """A ready variant, its profile, and each worker that has it loaded with the rows in flight there."""

    variant: Variant
    profile: Profile | None
    workers: tuple[Slot, ...] = ()


@dataclass(frozen=True, slots=True)
class Choice:
    variant: Variant
    worker: str | None  # None: not loaded anywhere, load it first (cold start)
    predicted_ms: float | None
    cost_per_1k: float | None
    reason: str
    prefetch: Variant | None = None  # a cheaper variant to load in the background for later queries


PREFETCH_SAVING = 0.2  # load a cheaper variant in the background when it saves at least this share
PREFETCH_SCAN = 32  # look at most this many cheaper variants (keeps every decision in microseconds)


class Unreachable(Exception):
    """No variant can meet the objective; the message names the closest achievable option."""


class Saturated(Unreachable):
    """A loaded variant would meet the latency objective with an empty queue, but not behind the
    rows in flight now, and no cold start can either: the objective is fine, the load is not.
    ``wait_ms``: how far the best option misses it (when to retry); ``variant``, ``worker``: that
    option, whose demand the request was (the autoscaler counts it there)."""

    def __init__(self, message: str, wait_ms: float, variant: str | None = None, worker: str | None = None) -> None:
        super().__init__(message)
        self.wait_ms, self.variant, self.worker = wait_ms, variant, worker


def drain_ms(
    profile: Profile,
    max_batch: int,
    in_flight: int,
    batch: int | None = None,
    instances: int = 1,
    running_ms: float | None = None,
) -> float:
    """How long ``in_flight`` rows take as the worker runs them: in batches of its size (its
    preferred batch, calibrated at load; ``max_batch`` when unknown) — full batches, then the
    rest — shared by its ``instances``. The first batch is running already (the worker never
    idles with rows queued): what is left of it after the ``running_ms`` it has run, or, not
    known, half of it (seen at a random moment it is half done; bench/workload: counting it
    whole made four in five of the worst predictions too high; but a request right behind
    another finds that one's batch just started, and half undercounts it)."""
    if not in_flight:
        return 0.0
    size = max(1, min(batch or max_batch, max_batch))
    full, rest = divmod(in_flight, size)
    total = full * profile.predict_ms(size) + (profile.predict_ms(rest) if rest else 0.0)
    first = profile.predict_ms(min(in_flight, size))
    done = 0.5 * first if running_ms is None else min(first, max(0.0, running_ms))
    return (total - done) / max(1, instances)


def predict_ms(
    profile: Profile,
    max_batch: int,
    rows: int,
    in_flight: int,
    batch: int | None = None,
    instances: int = 1,
    extra_ms: float = 0.0,
    scale: float = 1.0,
    shared: tuple[float, ...] = (),
    running_ms: float | None = None,
    length: int | None = None,
) -> float:
    """Queue wait (:func:`drain_ms` of the rows ahead) plus this request's batch, times ``scale``:
    measured / profiled batch time on that worker lately. ``shared``: the work (ms) other variants
    have in flight on the same cores; the cores are time-shared (each variant runs in its own
    thread), so each delays this request by at most as long as it runs itself (processor sharing:
    ``min(own, other)``), not by all of its work (adding it in series over-predicted tenfold in
    bench/workload). ``extra_ms``: what the rest misses lately on that worker (the serving path's
    overhead, scheduling): the median residual, negative when it over-predicts (at most half).
    ``running_ms``: how long the batch running there has run (:func:`drain_ms`).
    ``length``: this request's dynamic-axis length (its own batch is costed at it; the rows ahead at
    the profile's representative length)."""
    own = drain_ms(profile, max_batch, in_flight, batch, instances, running_ms) + profile.cost_ms(
        min(rows, max_batch), length
    )
    own *= scale
    core = own + sum(min(own, other) for other in shared)
    return max(0.5 * core, core + extra_ms)


def _acc(v: Variant) -> str:
    return "unknown" if v.accuracy is None else f"{v.accuracy:.3f} ({v.accuracy_source})"


class ScopeIndex:
    """A scope's ready variants sorted by cost, with prefix maxima of accuracy so a floor can skip
    every cheaper variant that cannot meet it (a bisection instead of a scan). Build once per scope
    and catalog version; it holds no live state."""

    def __init__(self, options: list[Option]) -> None:
        self.ordered = sorted(options, key=_cost)
        self._prefix: dict[bool, list[float]] = {}
        for allow_estimated in (True, False):
            best, prefix = -1.0, []
            for o in self.ordered:
                v = o.variant
                if v.accuracy is not None and (allow_estimated or v.accuracy_source != "estimated"):
                    best = max(best, v.accuracy)
                prefix.append(best)
            self._prefix[allow_estimated] = prefix

    def most_accurate(self, allow_estimated: bool) -> Option | None:
        prefix = self._prefix[allow_estimated]
        if not prefix or prefix[-1] < 0:
            return None
        return self.ordered[bisect.bisect_left(prefix, prefix[-1])]

    def first_meeting(self, floor: float | None, allow_estimated: bool) -> int:
        """Index of the first variant (in cost order) whose accuracy could meet ``floor``."""
        return 0 if floor is None else bisect.bisect_left(self._prefix[allow_estimated], floor)


def _cost(o: Option) -> float:
    return o.profile.cost_per_1k if o.profile is not None else float("inf")


def select(objective: Objective, options: list[Option], rows: int, scope: str) -> Choice:
    """Convenience form of :func:`select_sorted`: splits loaded from cold and sorts both by cost."""
    index = ScopeIndex(options)
    live = {o.variant.name: o.workers for o in index.ordered if o.workers}
    return select_sorted(objective, [o for o in index.ordered if o.workers], index, rows, scope, live.get)


def select_sorted(
    objective: Objective,
    loaded: list[Option],
    index: ScopeIndex,
    rows: int,
    scope: str,
    live: Callable[[str], tuple[Slot, ...] | None],
) -> Choice:
    """Cheapest variant that meets the objective: loaded ones first (queue wait counted), then cold
    ones (load time counted against the latency objective). ``loaded`` and ``index`` (every
    ready variant of the scope) are sorted by cost, so the first fit wins and the scan stops
    there; the index skips variants too inaccurate for the floor. ``live(name)`` reads the
    (worker, rows in flight) snapshot of a loaded variant only when the scan reaches it. No clock,
    no I/O."""
    ordered = index.ordered
    lat, floor, ceiling = objective.latency_ms, objective.min_accuracy, objective.max_cost

    def admissible(o: Option) -> bool:
        v = o.variant
        if v.max_batch < rows or v.status != "ready":
            return False
        if floor is not None and (
            v.accuracy is None
            or v.accuracy < floor
            or (v.accuracy_source == "estimated" and not objective.allow_estimated)
        ):
            return False
        return ceiling is None or (o.profile is not None and o.profile.cost_per_1k <= ceiling)

    cheapest: Option | None = None  # the cheapest loaded variant that could serve (maybe saturated now)
    for o in loaded:
        if not admissible(o):  # static checks first: live state only for candidates
            continue
        cheapest = cheapest or o
        workers = live(o.variant.name)
        best = _fastest_slot(o, workers, rows, lat, objective.length) if workers else None
        if best is not None:
            choice = _choice(objective, o, best[0], best[1], scope)
            return _with_prefetch(choice, objective, index, loaded, cheapest, admissible, rows)
    hosted = {o.variant.name for o in loaded}
    for o in itertools.islice(ordered, index.first_meeting(floor, objective.allow_estimated), None):
        if ceiling is not None and _cost(o) > ceiling:
            break  # sorted by cost: nothing further is cheap enough
        if o.variant.name in hosted or not admissible(o):
            continue
        if o.profile is None:  # not profiled yet: no prediction, fine when no latency is asked for
            if lat is None:
                return _choice(objective, o, None, None, scope)
            continue
        pred = o.profile.load_time_ms + o.profile.cost_ms(min(rows, o.variant.max_batch), objective.length)
        if lat is None or pred <= lat:
            return _choice(objective, o, None, pred, scope)
    _raise_unmet(objective, index, [o for o in loaded if admissible(o)], rows, scope, live)


def _fastest_slot(
    o: Option, workers: tuple[Slot, ...], rows: int, lat: float | None, length: int | None = None
) -> tuple[str, float | None] | None:
    """The worker where ``o`` would answer soonest within ``lat`` (its predicted ms), or None."""
    best = None
    for worker, in_flight, *shape in workers:
        pred = predict_ms(o.profile, o.variant.max_batch, rows, in_flight, *shape, length=length) if o.profile else None
        if lat is not None and (pred is None or pred > lat):
            continue
        if best is None or (pred or 0.0) < (best[1] or 0.0):
            best = (worker, pred)
    return best


def _with_prefetch(
    choice: Choice,
    objective: Objective,
    index: ScopeIndex,
    loaded: list[Option],
    cheapest: Option,
    admissible: Callable[[Option], bool],
    rows: int,
) -> Choice:
    """``choice``, plus a cheaper unloaded variant to load in the background when one exists. A
    prefetch must beat every loaded candidate, not only the chosen one: when a cheaper one is
    loaded but saturated, capacity is the controller's to add (a replica), and a variant between
    the two would be downgraded again as soon as load fell (the bench/workload decision log showed
    that cycle every 10 s)."""
    ordered = index.ordered
    bar = _cost(cheapest) * (1 - PREFETCH_SAVING)
    start = index.first_meeting(objective.min_accuracy, objective.allow_estimated)
    if start >= len(ordered) or _cost(ordered[start]) >= bar:
        return choice  # nothing in the scope is cheaper enough to be worth loading
    hosted = {x.variant.name for x in loaded}
    cheaper = _cheaper_cold(
        ordered[start : start + PREFETCH_SCAN],
        hosted,
        admissible,
        objective.latency_ms,
        rows,
        _cost(cheapest),
        objective.length,
    )
    if cheaper is None:
        return choice
    return dataclasses.replace(
        choice,
        prefetch=cheaper.variant,
        reason=(
            f"{choice.reason}; loading the cheaper {cheaper.variant.name} (${_cost(cheaper):.3g} per 1k) "
            "in the background for the next queries"
        ),
    )


def _raise_unmet(
    objective: Objective,
    index: ScopeIndex,
    admissible_loaded: list[Option],
    rows: int,
    scope: str,
    live: Callable[[str], tuple[Slot, ...] | None],
) -> NoReturn:
    """Nothing meets the objective: say why (accuracy out of reach, no variant takes the batch,
    every fitting one saturated now, or the best achievable)."""
    ordered, floor = index.ordered, objective.min_accuracy
    if floor is not None and index.first_meeting(floor, objective.allow_estimated) >= len(ordered):
        best_acc = index.most_accurate(objective.allow_estimated)
        if best_acc is None:
            raise Unreachable(f"min_accuracy {floor:g} unreachable for {scope}: no variant has a known accuracy")
        raise Unreachable(
            f"min_accuracy {floor:g} unreachable for {scope}: best is "
            f"{best_acc.variant.accuracy:.3f} ({best_acc.variant.architecture}, {best_acc.variant.name})"
        )
    fitting = [o for o in ordered if o.variant.max_batch >= rows and o.variant.status == "ready"]
    if not fitting:
        raise Unreachable(f"{scope}: no ready variant takes a batch of {rows}")
    if objective.latency_ms is not None:
        _raise_if_saturated(objective, admissible_loaded, rows, scope, live)
    raise Unreachable(_why_not(objective, fitting, scope, rows, live))


def _raise_if_saturated(
    objective: Objective, loaded: list[Option], rows: int, scope: str, live: Callable[[str], tuple[Slot, ...] | None]
) -> None:
    """Raise :class:`Saturated` if the latency objective is missed only because of queues."""
    lat = objective.latency_ms
    assert lat is not None
    best: tuple[float, Option, str] | None = None
    for o in loaded:
        if o.profile is None or o.profile.cost_ms(min(rows, o.variant.max_batch), objective.length) > lat:
            continue  # too slow even when idle
        for worker, in_flight, *shape in live(o.variant.name) or ():
            pred = predict_ms(o.profile, o.variant.max_batch, rows, in_flight, *shape, length=objective.length)
            if best is None or pred < best[0]:
                best = (pred, o, worker)
    if best is not None:
        pred, o, worker = best
        raise Saturated(
            f"{scope} is saturated for latency_ms {lat:g}: {o.variant.name} would meet it when "
            f"idle, but with the rows in flight now it predicts {pred:.1f} ms",
            pred - lat,
            o.variant.name,
            worker,
        )


def _cheaper_cold(
    ordered: list[Option],
    hosted: set[str],
    admissible: Callable[[Option], bool],
    lat: float | None,
    rows: int,
    cost: float,
    length: int | None = None,
) -> Option | None:
    """The cheapest unloaded variant that would meet the objective once loaded, if it saves enough
    (``ordered`` is the slice of at most ``PREFETCH_SCAN`` candidates to look at)."""
    for o in ordered:
        if _cost(o) >= cost * (1 - PREFETCH_SAVING):
            return None  # sorted by cost: nothing further saves enough
        if o.profile is None or o.variant.name in hosted or not admissible(o):
            continue
        if lat is None or o.profile.cost_ms(min(rows, o.variant.max_batch), length) <= lat:
            return o
    return None


def _choice(objective: Objective, o: Option, worker: str | None, pred: float | None, scope: str) -> Choice:
    v, cost = o.variant, _cost(o)
    if worker is not None:
        where = (
            f"loaded on {worker}, predicted {pred:.2f} ms with the queue there"
            if pred is not None
            else f"loaded on {worker}, not profiled yet"
        )
    elif o.profile is None or pred is None:
        where = "not loaded: cold start, not profiled yet (no prediction)"
    else:
        where = f"not loaded: cold start, predicted {pred:.1f} ms including {o.profile.load_time_ms:.0f} ms to load"
    reason = (
        f"{scope}: {v.name} is the cheapest variant meeting {_objective_text(objective)} "
        f"(${cost:.3g} per 1k, accuracy {_acc(v)}; {where})"
    )
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


def _why_not(
    objective: Objective, options: list[Option], scope: str, rows: int, live: Callable[[str], tuple[Slot, ...] | None]
) -> str:
    """Name the closest achievable option for the objective that cannot be met (a full scan: this
    is the error path)."""
    if objective.min_accuracy is not None:
        known = [
            o
            for o in options
            if o.variant.accuracy is not None
            and (objective.allow_estimated or o.variant.accuracy_source != "estimated")
        ]
        top = [o for o in known if o.variant.accuracy >= objective.min_accuracy]
        if not top:
            if not known:
                return (
                    f"min_accuracy {objective.min_accuracy:g} unreachable for {scope}: no variant has a known accuracy"
                )
            b = max(known, key=lambda o: o.variant.accuracy)
            return (
                f"min_accuracy {objective.min_accuracy:g} unreachable for {scope}: best is "
                f"{b.variant.accuracy:.3f} ({b.variant.architecture}, {b.variant.name})"
            )
        options = top
    if objective.max_cost is not None:
        priced = [o for o in options if o.profile is not None]
        if not any(o.profile.cost_per_1k <= objective.max_cost for o in priced):
            if not priced:
                return f"max_cost ${objective.max_cost:g} per 1k unreachable for {scope}: no variant is profiled yet"
            c = min(priced, key=lambda o: o.profile.cost_per_1k)
            return (
                f"max_cost ${objective.max_cost:g} per 1k unreachable for {scope}: cheapest that meets the "
                f"other objectives is ${c.profile.cost_per_1k:.3g} per 1k ({c.variant.name})"
            )
    timed = []
    for o in options:
        if o.profile is None:
            continue
        workers = live(o.variant.name) or ()
        for _, in_flight, *shape in workers:
            pred = predict_ms(o.profile, o.variant.max_batch, rows, in_flight, *shape, length=objective.length)
            timed.append((pred, o, "loaded"))
        if not workers:
            cold = o.profile.load_time_ms + o.profile.cost_ms(min(rows, o.variant.max_batch), objective.length)
            timed.append((cold, o, "cold"))
    if objective.latency_ms is None:
        return f"no variant of {scope} meets {_objective_text(objective)} with a batch of {rows}"
    if not timed:
        return f"latency_ms {objective.latency_ms:g} unreachable for {scope}: no variant is profiled yet"
    ms, o, state = min(timed, key=lambda t: t[0])
    return (
        f"latency_ms {objective.latency_ms:g} unreachable for {scope}: fastest is {ms:.2f} ms "
        f"({o.variant.name}, {state})"
    )
