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
  the time, a queue that keeps growing, or requests turned away: the selection refused them (429)
  because these replicas were too busy for their objectives (an objective with no room to batch
  or queue caps a replica far below its throughput). Demand counts those refused rows too, and a
  variant keeps one replica more than the count that turned requests away for
  ``turned_away_hold_s``;
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

import dataclasses
import math

from infaas.policy.consolidate import consolidate
from infaas.policy.scaling import (
    Action,
    Memory,
    ScalingConfig,
    VariantLoad,
    WorkerRoom,
    capacity_rps,
    every_worker_above,
    hourly_usd,
    pressure,
    state_of,
)
from infaas.registry.types import Profile, Variant

DEFAULT = ScalingConfig()


def autoscale(
    loads: list[VariantLoad],
    family: dict[str, list[tuple[Variant, Profile]]],
    rooms: list[WorkerRoom],
    now: float,
    memory: Memory,
    cfg: ScalingConfig = DEFAULT,
) -> tuple[list[Action], Memory]:
    """Actions for this snapshot, and the updated hysteresis memory."""
    actions: list[Action] = []
    low_since = dict(memory.low_since)
    scaled_at = {k: t for k, t in memory.scaled_at.items() if now - t < cfg.cooldown_s}
    short = {k: held for k, held in memory.short.items() if now - held[0] < cfg.turned_away_hold_s}
    free = {r.name: r.free_mb for r in rooms}
    spare = {r.name: max(0, r.cores - r.threads) for r in rooms}  # cores no runtime instance holds
    if memory.drain is not None:  # nothing is placed on a worker being emptied
        free[memory.drain], spare[memory.drain] = 0.0, 0
        loads = [_last(load, memory.drain) for load in loads]
    per_arch: dict[str, int] = {}
    for load in loads:
        per_arch[load.variant.architecture] = per_arch.get(load.variant.architecture, 0) + 1
    for load in loads:
        v, p = load.variant, load.profile
        state, why, demand = state_of(load, cfg)
        per_replica = capacity_rps(p, v.max_batch) * (1 - cfg.headroom)
        pr = pressure(load, cfg) if load.window else None
        if pr is not None and pr.share > cfg.turned_away_share:
            short[v.name] = (now, load.slots, pr.surge)  # this many turned requests away: not enough
        if state == "overloaded":
            low_since.pop(v.name, None)
            if v.name in scaled_at:
                continue  # the last scale-up has not shown in the window yet
            grow = _room_to_grow(load, demand, per_replica, rooms, free, spare, cfg)
            action = _scale_up(load, demand, per_replica, family.get(v.architecture, []), free, grow, why, cfg)
            if action.kind == "add_worker" and pr is not None and not pr.saturated(cfg) and not _hot(load, rooms, cfg):
                continue  # turned away, on workers with CPU to spare: not a reason for another worker
            actions.append(action)
            scaled_at[v.name] = now
            if action.kind == "upgrade":
                scaled_at[action.target] = now
            elif action.kind == "replicate":
                free[action.target] -= p.peak_memory_mb
            elif action.kind == "grow":
                more = action.instances - load.instances_on(action.target)
                free[action.target] -= more * p.peak_memory_mb
                spare[action.target] -= more * v.threads
            continue
        quiet_for = max(cfg.scale_down_s, cfg.load_time_factor * p.load_time_ms / 1000)
        spread = _spread(load, state, why, rooms, free, cfg) if v.name not in scaled_at else None
        if spread is not None:
            actions.append(spread)
            low_since.pop(v.name, None)
            scaled_at[v.name] = now
            free[spread.target] -= p.peak_memory_mb
            continue
        held = short.get(v.name)
        if state != "inactive" and held is not None and load.slots <= held[1] + 1 and demand > held[2] / 2:
            low_since.pop(v.name, None)  # one more than turned requests away, at about that demand
            continue
        _scale_down(load, state, demand, per_replica, quiet_for, family, per_arch, low_since, now, cfg, actions)
    drain, cool_since = consolidate(loads, rooms, now, memory.drain, memory.cool_since, free, spare, cfg, actions)
    hot_since, added_at = _scale_out(loads, rooms, now, memory, cfg, actions)
    empty_since = _scale_in(rooms, now, memory, cfg, actions)
    return actions, Memory(low_since, empty_since, scaled_at, hot_since, added_at, drain, cool_since, short)


def _hot(load: VariantLoad, rooms: list[WorkerRoom], cfg: ScalingConfig) -> bool:
    """Every worker hosting ``load`` measured above ``worker_busy`` CPU. A variant that turns requests
    away but is not short of throughput is short of replicas on the cores it has (its requests wait
    behind other variants' batches there); another worker is for CPU, as INFaaS's worker-level rule
    has it. (bench/workload on a 2-core VM: a second worker for turned-away Lite0 requests shared the
    frontend's core, and violations went from 22 % to 35 %.)"""
    cpu = {r.name: r.cpu for r in rooms}
    return all((cpu.get(w) or 0.0) >= cfg.worker_busy for w in load.replicas)


def _last(load: VariantLoad, worker: str) -> VariantLoad:
    """``load`` with its replica on ``worker`` (if any) last: scale-down unloads that one first."""
    if worker not in load.replicas or load.replicas[-1] == worker:
        return load
    order = sorted(range(len(load.replicas)), key=lambda i: load.replicas[i] == worker)
    instances = tuple(load.instances[i] for i in order) if load.instances else ()
    return dataclasses.replace(load, replicas=tuple(load.replicas[i] for i in order), instances=instances)


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
        if len(load.replicas) == 1 and load.slots > 1 and now - since >= quiet_for:
            worker = load.replicas[0]
            actions.append(
                Action("shrink", v.name, worker, f"{v.name}: no requests for {now - since:.0f} s", instances=1)
            )
            low_since.pop(v.name, None)
        elif len(load.replicas) > 1 and now - since >= quiet_for:
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
    low = demand <= per_replica * max(0, load.slots - 1) * cfg.low_fraction or (
        load.slots == 1 and demand <= per_replica * cfg.low_fraction
    )
    if not low:
        low_since.pop(v.name, None)
        return
    since = low_since.setdefault(v.name, now)
    if now - since < quiet_for:
        return  # not low for long enough: no flapping
    low_since.pop(v.name, None)
    if load.slots > 1:
        fitted = (
            f"{v.name}: demand {demand:.0f} rows/s has fitted in {load.slots - 1} instance(s) for {now - since:.0f} s"
        )
        singles = [w for w in load.replicas if load.instances_on(w) == 1]
        if len(load.replicas) > 1 and singles:  # a whole replica goes first: its worker may empty
            actions.append(Action("unload", v.name, singles[-1], f"{fitted}; its replica on {singles[-1]} unloaded"))
        else:
            worker = max(reversed(load.replicas), key=load.instances_on)
            left = load.instances_on(worker) - 1
            actions.append(Action("shrink", v.name, worker, f"{fitted}; {left} instance(s) left on {worker}", left))
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


def _room_to_grow(
    load: VariantLoad,
    demand: float,
    per_replica: float,
    rooms: list[WorkerRoom],
    free: dict[str, float],
    spare: dict[str, int],
    cfg: ScalingConfig,
) -> tuple[str, int, str] | None:
    """A worker hosting ``load`` below ``worker_busy`` CPU, with idle cores and the memory for more of
    its runtime instances: (worker, instances to add, up to what the demand needs; why there)."""
    if not cfg.grow:
        return None
    v, p = load.variant, load.profile
    needed = max(1, math.ceil(demand / per_replica) - load.slots)
    cpu = {r.name: r.cpu for r in rooms}
    best: tuple[str, int, str] | None = None
    for w in load.replicas:
        busy = cpu.get(w)
        if busy is None or busy >= cfg.worker_busy:
            continue
        fit = int(free.get(w, 0.0) // p.peak_memory_mb) if p.peak_memory_mb > 0 else needed
        more = min(needed, spare.get(w, 0) // max(1, v.threads), fit)
        if more >= 1 and (best is None or more > best[1]):
            best = (w, more, f"{spare[w]} idle core(s), CPU {busy:.0%}")
    return best


def _scale_up(
    load: VariantLoad,
    demand: float,
    per_replica: float,
    family: list[tuple[Variant, Profile]],
    free: dict[str, float],
    grow: tuple[str, int, str] | None,
    why: str,
    cfg: ScalingConfig,
) -> Action:
    """Replicate or upgrade, like with like: the hourly price of the placement each leaves (this
    variant on more replicas, or the candidate on the replicas it has now), the cheaper winning;
    load time is a constraint (``max_scale_load_s``), never added to a price."""
    v, p = load.variant, load.profile
    n = load.slots
    needed = max(1, math.ceil(demand / per_replica) - n)
    hosts = [
        w for w, mb in sorted(free.items(), key=lambda kv: -kv[1]) if w not in load.replicas and mb >= p.peak_memory_mb
    ]
    options: list[tuple[float, float, str, str, str]] = []  # ($/h after, load s, kind, variant, target)
    if grow is not None:  # first: at equal price, instances sharing one queue batch better than replicas
        options.append(((n + needed) * hourly_usd(p), p.load_time_ms / 1000, "grow", v.name, grow[0]))
    if hosts:
        options.append(((n + needed) * hourly_usd(p), p.load_time_ms / 1000, "replicate", v.name, hosts[0]))
    for cand, cp in family:
        if cand.name == v.name or cand.status != "ready" or (cand.accuracy or 0) < (v.accuracy or 0):
            continue
        if cand.max_batch < v.max_batch:
            continue  # it must take every request the current one takes
        reps = len(load.replicas)  # a swap loads the candidate once per replica
        carries = capacity_rps(cp, cand.max_batch) * reps
        if carries * (1 - cfg.headroom) < demand or carries < cfg.upgrade_gain * capacity_rps(p, v.max_batch) * n:
            continue  # it must carry the demand, and clearly more than the instances running now
        options.append((reps * hourly_usd(cp), cp.load_time_ms / 1000, "upgrade", cand.name, cand.name))
    if not options:
        return Action("add_worker", v.name, "cpu", f"{v.name} overloaded ({why}) and no worker has room")
    in_time = [o for o in options if o[1] <= cfg.max_scale_load_s]
    if in_time:
        # the cheapest placement; an upgrade only when replicating costs upgrade_ratio times more; at
        # an equal price (two 1-thread instances or one 2-thread variant) growing wins: nothing is swapped
        best = min(
            in_time,
            key=lambda o: (round(o[0] * (cfg.upgrade_ratio if o[2] == "upgrade" else 1.0), 9), o[2] != "grow", o[1]),
        )
    else:  # nothing loads in time: the soonest relief
        best = min(options, key=lambda o: o[1])
    cost, load_s, kind, name, target = best
    what = {"upgrade": "", "grow": f" +{grow[1] if grow else 0} instance(s)", "replicate": f" +{needed} replica(s)"}
    others = "; ".join(
        f"{o[2]}{what[o[2]] if o[2] != 'upgrade' else ' ' + o[3]}: ${o[0]:.3g}/h, loads in {o[1]:.2g} s"
        for o in options
        if o is not best
    )
    compare = f" (vs {others})" if others else ""
    late = "" if in_time else f"; nothing loads within {cfg.max_scale_load_s:g} s, this loads soonest"
    if kind == "grow" and grow is not None:
        more = load.instances_on(target) + grow[1]
        return Action(
            "grow",
            v.name,
            target,
            f"{v.name} overloaded ({why}); {target} has {grow[2]}: {more} instance(s) there, "
            f"{n + grow[1]} in all at ${cost:.3g}/h{compare}{late}",
            more,
        )
    if kind == "upgrade":
        return Action(
            "upgrade",
            v.name,
            name,
            f"{v.name} overloaded ({why}); {name} carries it on {len(load.replicas)} replica(s) at ${cost:.3g}/h{compare}{late}",
        )
    return Action(
        "replicate",
        v.name,
        target,
        f"{v.name} overloaded ({why}); +1 replica on {target}, {n + needed} replica(s) at ${cost:.3g}/h{compare}{late}",
    )
