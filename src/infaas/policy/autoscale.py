"""Model-level autoscaling as pure functions: variant states and scaling actions, with reasons.

The controller (issue 5) feeds these a snapshot: per loaded variant, a short window of samples
(arrival rate, completed rate, mean batch, queue length, latency) summed over its replicas, its
profile, and where it runs; plus the architecture's other ready variants with their profiles.
Nothing here reads a clock or does I/O: ``now`` is passed in, and the hysteresis memory (when load
first looked low) is passed in and returned, so the simulator can replay the very same code.

States, as in INFaaS:
- ``inactive``: no arrivals in the window;
- ``overloaded``: demand over the newest samples above what its replicas sustain (capacity per
  replica = rows/s at the profile's best batch, less a headroom), replicas computing nearly all
  the time, or a queue that keeps growing;
- ``interfered``: latency well above the profile's prediction while demand is within capacity;
- ``active``: otherwise.
Actions: ``replicate`` (one more replica on a worker with memory to spare), ``upgrade`` (a faster
variant of the same architecture), ``downgrade`` (a cheaper one that still carries the load; both
only to variants at least as accurate, taking batches at least as large),
``unload`` (a replica, or the variant when idle). Replicate vs upgrade is chosen by the hourly price
of the placement each leaves (INFaaS added load seconds to the price and compared a replica's
increment with an upgrade's total; here load time is a separate constraint). Scale-up
is immediate; scale-down waits until load has stayed low for ``max(scale_down_s, k x load time)``,
so an oscillating load never flaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infaas.registry.types import Profile, Variant


@dataclass(frozen=True, slots=True)
class Sample:
    """One report for one variant, summed over its replicas."""

    time: float
    arrival_rps: float  # rows per second that arrived
    completed_rps: float
    mean_batch: float
    queue_rows: int
    p50_ms: float
    busy: float = 0.0  # fraction of the replicas' time spent computing


@dataclass(frozen=True, slots=True)
class VariantLoad:
    variant: Variant
    profile: Profile
    replicas: tuple[str, ...]  # workers hosting it
    window: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class WorkerRoom:
    """A worker's free memory for one more variant, and how many variants it hosts."""

    name: str
    free_mb: float
    variants: int = 1
    cpu: float | None = None  # share of its cores busy over the last interval (None: not measured yet)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # replicate | upgrade | downgrade | unload | add_worker | remove_worker
    variant: str
    target: str  # a worker (replicate, unload) or a variant (upgrade, downgrade)
    reason: str


@dataclass(frozen=True)
class ScalingConfig:
    headroom: float = 0.05  # keep 5 % of a replica's capacity spare (INFaaS: CPU)
    interference_factor: float = 1.5
    low_fraction: float = 0.5  # "low" when demand fits in half of one replica fewer
    scale_down_s: float = 10.0
    load_time_factor: float = 5.0  # ... or this many times the variant's load time, if longer
    idle_unload_s: float = 60.0
    upgrade_ratio: float = 1.0  # upgrade when replicating leaves a placement this many times dearer
    max_scale_load_s: float = 30.0  # a scale-up must load within this (else the soonest relief wins)
    cooldown_s: float = 3.0  # after scaling a variant up, let the window see the effect first
    fast_samples: int = 2  # overload is judged on the newest samples (react fast), low load on all
    keep_warm: bool = True  # an idle architecture keeps one replica of one variant loaded
    min_workers: int = 1
    # worker level (INFaaS: scale out when every worker is above 80 % utilisation): variants that
    # share a worker each look within capacity while together they saturate its cores
    worker_busy: float = 0.8
    worker_cool: float = 0.5  # a worker under this has CPU to take a replica of a variant on a hot one
    spread_busy: float = 0.1  # ... if that variant computes at least this share of its replicas' time
    scale_out_s: float = 2.0  # every worker hot this long -> add one
    worker_cooldown_s: float = 10.0  # after adding a worker, let the load spread before adding another


@dataclass
class Memory:
    """Hysteresis: since when each variant's load (each worker) has looked low (empty); when each
    variant was last scaled up."""

    low_since: dict[str, float] = field(default_factory=dict)
    empty_since: dict[str, float] = field(default_factory=dict)
    scaled_at: dict[str, float] = field(default_factory=dict)
    hot_since: float | None = None  # since when every worker has been above worker_busy
    added_at: float | None = None  # when a worker was last added for CPU


def every_worker_above(rooms: list[WorkerRoom], threshold: float) -> list[WorkerRoom]:
    """The workers, when every one is measured and above ``threshold`` CPU; else none (a worker
    not measured yet, or one with room, means no scale-out). INFaaS's worker-level rule."""
    measured = [r for r in rooms if r.cpu is not None]
    if measured and len(measured) == len(rooms) and all(r.cpu >= threshold for r in measured):
        return measured
    return []


def capacity_rps(profile: Profile, max_batch: int) -> float:
    """Rows per second one replica sustains at its best batch (within its max batch)."""
    batch = max(1, min(profile.best_batch or max_batch, max_batch))
    ms = profile.predict_ms(batch)
    return batch / ms * 1000 if ms > 0 else float("inf")


def state_of(load: VariantLoad, cfg: ScalingConfig) -> tuple[str, str, float]:
    """(state, reason, demand in rows/s) of a loaded variant over its window."""
    if not load.window or all(s.arrival_rps == 0 for s in load.window):
        return "inactive", "no requests in the window", 0.0
    demand = sum(s.arrival_rps for s in load.window) / len(load.window)
    recent = load.window[-cfg.fast_samples :]  # scale up on the last samples, down on the whole window
    surge = sum(s.arrival_rps for s in recent) / len(recent)
    cap = capacity_rps(load.profile, load.variant.max_batch) * len(load.replicas) * (1 - cfg.headroom)
    first, last = load.window[0], load.window[-1]
    growing = len(load.window) > 1 and last.queue_rows > first.queue_rows > load.variant.max_batch * len(load.replicas)
    busy = sum(s.busy for s in recent) / len(recent)
    if surge > cap or growing or busy > 1 - cfg.headroom:
        demand = max(demand, surge)
        if demand > cap:
            why = f"demand {demand:.0f} rows/s over capacity {cap:.0f} of {len(load.replicas)} replica(s)"
        elif growing:
            why = f"queue growing {first.queue_rows} -> {last.queue_rows} rows"
        else:
            why = f"replicas computing {busy:.0%} of the time (demand {demand:.0f} rows/s)"
        return "overloaded", why, demand
    expected = load.profile.predict_ms(max(1, round(last.mean_batch)))
    if last.p50_ms > cfg.interference_factor * expected:
        return (
            "interfered",
            f"p50 {last.p50_ms:.1f} ms vs {expected:.1f} ms profiled at batch {last.mean_batch:.1f}",
            demand,
        )
    return "active", f"demand {demand:.0f} of capacity {cap:.0f} rows/s", demand


def hourly_usd(p: Profile) -> float:
    """What one replica costs per hour: its price per inference times the inferences it can serve
    in an hour (= its share of the hardware's hourly price)."""
    return p.cost_per_1k / 1000 * p.throughput * 3600


def autoscale(
    loads: list[VariantLoad],
    family: dict[str, list[tuple[Variant, Profile]]],
    rooms: list[WorkerRoom],
    now: float,
    memory: Memory,
    cfg: ScalingConfig = ScalingConfig(),
) -> tuple[list[Action], Memory]:
    """Actions for this snapshot, and the updated hysteresis memory."""
    actions: list[Action] = []
    low_since = dict(memory.low_since)
    scaled_at = {k: t for k, t in memory.scaled_at.items() if now - t < cfg.cooldown_s}
    free = {r.name: r.free_mb for r in rooms}
    per_arch: dict[str, int] = {}
    for load in loads:
        per_arch[load.variant.architecture] = per_arch.get(load.variant.architecture, 0) + 1
    for load in loads:
        v, p = load.variant, load.profile
        state, why, demand = state_of(load, cfg)
        per_replica = capacity_rps(p, v.max_batch) * (1 - cfg.headroom)
        if state == "overloaded":
            low_since.pop(v.name, None)
            if v.name in scaled_at:
                continue  # the last scale-up has not shown in the window yet
            action = _scale_up(load, demand, per_replica, family.get(v.architecture, []), free, why, cfg)
            actions.append(action)
            scaled_at[v.name] = now
            if action.kind == "upgrade":
                scaled_at[action.target] = now
            elif action.kind == "replicate":
                free[action.target] -= p.peak_memory_mb
            continue
        quiet_for = max(cfg.scale_down_s, cfg.load_time_factor * p.load_time_ms / 1000)
        spread = _spread(load, state, why, rooms, free, cfg) if v.name not in scaled_at else None
        if spread is not None:
            actions.append(spread)
            low_since.pop(v.name, None)
            scaled_at[v.name] = now
            free[spread.target] -= p.peak_memory_mb
            continue
        _scale_down(load, state, demand, per_replica, quiet_for, family, per_arch, low_since, now, cfg, actions)
    hot_since, added_at = _scale_out(loads, rooms, now, memory, cfg, actions)
    empty_since = _scale_in(rooms, now, memory, cfg, actions)
    return actions, Memory(low_since, empty_since, scaled_at, hot_since, added_at)


def _scale_down(
    load: VariantLoad,
    state: str,
    demand: float,
    per_replica: float,
    quiet_for: float,
    family: dict[str, list[tuple[Variant, Profile]]],
    per_arch: dict[str, int],
    low_since: dict[str, float],
    now: float,
    cfg: ScalingConfig,
    actions: list[Action],
) -> None:
    """An idle variant sheds replicas, then (unless it keeps its architecture warm) its last one;
    one whose demand has fitted in fewer replicas for ``quiet_for`` sheds one, or, down to one,
    moves to a cheaper variant that carries it. Appends to ``actions``; keeps ``low_since``."""
    v, p = load.variant, load.profile
    if state == "inactive":
        since = low_since.setdefault(v.name, now)
        if len(load.replicas) > 1 and now - since >= quiet_for:
            actions.append(
                Action(
                    "unload",
                    v.name,
                    load.replicas[-1],
                    (f"{v.name}: no requests for {now - since:.0f} s; {len(load.replicas) - 1} replica(s) left"),
                )
            )
            low_since.pop(v.name, None)
        elif now - since >= max(cfg.idle_unload_s, quiet_for):
            last_one = cfg.keep_warm and per_arch[v.architecture] == 1
            for worker in load.replicas[1:] if last_one else load.replicas:
                actions.append(Action("unload", v.name, worker, f"{v.name} idle for {now - since:.0f} s"))
            if not last_one:
                per_arch[v.architecture] -= 1
            low_since.pop(v.name, None)
        return
    low = demand <= per_replica * max(0, len(load.replicas) - 1) * cfg.low_fraction or (
        len(load.replicas) == 1 and demand <= per_replica * cfg.low_fraction
    )
    if not low:
        low_since.pop(v.name, None)
        return
    since = low_since.setdefault(v.name, now)
    if now - since < quiet_for:
        return  # not low for long enough: no flapping
    low_since.pop(v.name, None)
    if len(load.replicas) > 1:
        actions.append(
            Action(
                "unload",
                v.name,
                load.replicas[-1],
                (
                    f"{v.name}: demand {demand:.0f} rows/s has fitted in {len(load.replicas) - 1} replica(s) "
                    f"for {now - since:.0f} s"
                ),
            )
        )
        return
    cheaper = _cheapest_carrying(v, p, demand, family.get(v.architecture, []), cfg)
    if cheaper is not None:
        actions.append(
            Action(
                "downgrade",
                v.name,
                cheaper.name,
                (
                    f"{v.name}: demand {demand:.0f} rows/s for {now - since:.0f} s is carried by the cheaper "
                    f"{cheaper.name}"
                ),
            )
        )


def _scale_out(
    loads: list[VariantLoad],
    rooms: list[WorkerRoom],
    now: float,
    memory: Memory,
    cfg: ScalingConfig,
    actions: list[Action],
) -> tuple[float | None, float | None]:
    """Worker level (INFaaS: every worker above 80 % CPU): a worker is added once every worker has
    been hot for ``scale_out_s`` (then not again for ``worker_cooldown_s``), for the variant that
    computes the most. Appends to ``actions``; returns (hot since, last added)."""
    hot_since, added_at = memory.hot_since, memory.added_at
    measured = every_worker_above(rooms, cfg.worker_busy)
    if not measured:
        return None, added_at
    hot_since = now if hot_since is None else hot_since
    cooled = added_at is None or now - added_at >= cfg.worker_cooldown_s
    if now - hot_since >= cfg.scale_out_s and cooled and loads and not any(a.kind == "add_worker" for a in actions):
        busiest = max(loads, key=lambda x: sum(s.busy for s in x.window) / len(x.window))
        cpus = ", ".join(f"{r.name} {r.cpu:.0%}" for r in measured)
        actions.append(
            Action(
                "add_worker",
                busiest.variant.name,
                "cpu",
                (
                    f"every worker above {cfg.worker_busy:.0%} CPU for {now - hot_since:.0f} s ({cpus}); "
                    f"{busiest.variant.name} computes the most"
                ),
            )
        )
        added_at, hot_since = now, None
    return hot_since, added_at


def _scale_in(
    rooms: list[WorkerRoom], now: float, memory: Memory, cfg: ScalingConfig, actions: list[Action]
) -> dict[str, float]:
    """A worker that has hosted nothing for ``scale_down_s`` is removed, down to ``min_workers``.
    Appends to ``actions``; returns since when each worker has been empty."""
    empty_since = {}
    removable = len(rooms)
    for room in rooms:
        if room.variants:
            continue
        since = empty_since[room.name] = memory.empty_since.get(room.name, now)
        if now - since >= cfg.scale_down_s and removable > cfg.min_workers:
            actions.append(
                Action("remove_worker", "", room.name, f"worker {room.name} has hosted nothing for {now - since:.0f} s")
            )
            removable -= 1
            empty_since.pop(room.name)
    return empty_since


def _spread(
    load: VariantLoad, state: str, why: str, rooms: list[WorkerRoom], free: dict[str, float], cfg: ScalingConfig
) -> Action | None:
    """A variant whose every replica sits on a hot worker (or that runs slower than profiled), while
    another worker has CPU to spare and the memory: one more replica there."""
    if state not in ("active", "interfered"):
        return None
    recent = load.window[-cfg.fast_samples :]
    if sum(s.busy for s in recent) / len(recent) < cfg.spread_busy:
        return None  # it hardly computes: another replica would hold memory and move nothing
    cpu = {r.name: r.cpu for r in rooms}
    hot = [w for w in load.replicas if (cpu.get(w) or 0.0) >= cfg.worker_busy]
    if state == "active" and len(hot) < len(load.replicas):
        return None
    cool = [
        r
        for r in rooms
        if r.name not in load.replicas
        and r.cpu is not None
        and r.cpu < cfg.worker_cool
        and free.get(r.name, 0.0) >= load.profile.peak_memory_mb
    ]
    if not cool:
        return None
    to = min(cool, key=lambda r: r.cpu or 0.0)
    cause = why if state == "interfered" else ", ".join(f"{w} at {cpu[w]:.0%} CPU" for w in hot)
    return Action(
        "replicate",
        load.variant.name,
        to.name,
        (f"{load.variant.name} {state} ({cause}); worker {to.name} has CPU to spare ({to.cpu:.0%}): +1 replica there"),
    )


def _cheapest_carrying(
    v: Variant, p: Profile, demand: float, family: list[tuple[Variant, Profile]], cfg: ScalingConfig
) -> Variant | None:
    best = None
    for cand, cp in family:
        if cand.name == v.name or cand.status != "ready" or cp.cost_per_1k >= p.cost_per_1k:
            continue
        if cand.max_batch < v.max_batch:
            continue  # it must take every request the current one takes
        if (cand.accuracy or 0) < (v.accuracy or 0):
            continue  # never trade accuracy away behind the user's back
        if capacity_rps(cp, cand.max_batch) * (1 - cfg.headroom) < demand / cfg.low_fraction:
            continue
        if best is None or cp.cost_per_1k < best[1].cost_per_1k:
            best = (cand, cp)
    return None if best is None else best[0]


def _scale_up(
    load: VariantLoad,
    demand: float,
    per_replica: float,
    family: list[tuple[Variant, Profile]],
    free: dict[str, float],
    why: str,
    cfg: ScalingConfig,
) -> Action:
    """Replicate or upgrade, like with like: the hourly price of the placement each leaves (this
    variant on more replicas, or the candidate on the replicas it has now), the cheaper winning;
    load time is a constraint (``max_scale_load_s``), never added to a price."""
    v, p = load.variant, load.profile
    n = len(load.replicas)
    needed = max(1, math.ceil(demand / per_replica) - n)
    hosts = [
        w for w, mb in sorted(free.items(), key=lambda kv: -kv[1]) if w not in load.replicas and mb >= p.peak_memory_mb
    ]
    options: list[tuple[float, float, str, str, str]] = []  # ($/h after, load s, kind, variant, target)
    if hosts:
        options.append(((n + needed) * hourly_usd(p), p.load_time_ms / 1000, "replicate", v.name, hosts[0]))
    for cand, cp in family:
        if cand.name == v.name or cand.status != "ready" or (cand.accuracy or 0) < (v.accuracy or 0):
            continue
        if cand.max_batch < v.max_batch:
            continue  # it must take every request the current one takes
        if capacity_rps(cp, cand.max_batch) * (1 - cfg.headroom) * n < demand:
            continue
        options.append((n * hourly_usd(cp), cp.load_time_ms / 1000, "upgrade", cand.name, cand.name))
    if not options:
        return Action("add_worker", v.name, "cpu", f"{v.name} overloaded ({why}) and no worker has room")
    in_time = [o for o in options if o[1] <= cfg.max_scale_load_s]
    if in_time:
        # the cheapest placement; an upgrade only when replicating costs upgrade_ratio times more
        best = min(in_time, key=lambda o: (o[0] * (cfg.upgrade_ratio if o[2] == "upgrade" else 1.0), o[1]))
    else:  # nothing loads in time: the soonest relief
        best = min(options, key=lambda o: o[1])
    cost, load_s, kind, name, target = best
    others = "; ".join(
        f"{o[2]} {o[3] if o[2] == 'upgrade' else f'+{needed} replica(s)'}: ${o[0]:.3g}/h, loads in {o[1]:.2g} s"
        for o in options
        if o is not best
    )
    compare = f" (vs {others})" if others else ""
    late = "" if in_time else f"; nothing loads within {cfg.max_scale_load_s:g} s, this loads soonest"
    if kind == "upgrade":
        return Action(
            "upgrade",
            v.name,
            name,
            f"{v.name} overloaded ({why}); {name} carries it on {n} replica(s) at ${cost:.3g}/h{compare}{late}",
        )
    return Action(
        "replicate",
        v.name,
        target,
        f"{v.name} overloaded ({why}); +1 replica on {target}, {n + needed} replica(s) at ${cost:.3g}/h{compare}{late}",
    )
