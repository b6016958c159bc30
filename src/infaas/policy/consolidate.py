"""Consolidation: emptying a lightly used worker so that scale-in can remove it.

Scale-in removes only empty workers, and a fleet that grew for a peak rarely empties one by
itself: each worker keeps a few warm or lightly used replicas. So, once the fleet could do without
one of its workers (its busy cores over the others' cores below ``worker_cool``) for
``consolidate_s``, the policy picks the worker with the fewest threads held and drains it: a
variant with other replicas that carry its demand is unloaded there; one without is moved (a
replica, or an instance grown, on another worker with idle cores, memory and CPU to spare, the
fullest such first: packing), then unloaded once the copy serves. Nothing is placed on the
draining worker meanwhile (scale-ups go to the others). A worker to add, or CPU that the others
could no longer absorb, ends the drain. Pure, like :func:`infaas.policy.autoscale.autoscale`, which calls it.
"""

from __future__ import annotations

from infaas.policy.scaling import Action, ScalingConfig, VariantLoad, WorkerRoom, capacity_rps, state_of


def busy_cores(rooms: list[WorkerRoom]) -> float:
    return sum((r.cpu or 0.0) * r.cores for r in rooms)


def without(rooms: list[WorkerRoom], name: str) -> float:
    """The other workers' CPU share if ``name``'s work moved onto them (inf: no other cores)."""
    rest = sum(r.cores for r in rooms if r.name != name)
    return busy_cores(rooms) / rest if rest else float("inf")


def consolidate(
    loads: list[VariantLoad],
    rooms: list[WorkerRoom],
    now: float,
    drain: str | None,
    cool_since: float | None,
    free: dict[str, float],
    spare: dict[str, int],
    cfg: ScalingConfig,
    actions: list[Action],
) -> tuple[str | None, float | None]:
    """Appends this round's consolidation actions; returns (the worker draining, fleet cool since)."""
    names = {r.name for r in rooms}
    if (
        not cfg.consolidate
        or len(rooms) <= cfg.min_workers
        or any(r.cpu is None or not r.cores for r in rooms)
        or any(a.kind == "add_worker" for a in actions)
    ):
        return None, None
    if drain is not None and (drain not in names or without(rooms, drain) >= cfg.worker_cool):
        drain = None  # removed, or the others could no longer absorb its work
    if drain is None:
        candidates = [r for r in rooms if r.variants and without(rooms, r.name) < cfg.worker_cool]
        if not candidates:
            return None, None
        cool_since = now if cool_since is None else cool_since
        if now - cool_since < cfg.consolidate_s:
            return None, cool_since
        hosted = {r.name: sum(1 for x in loads if r.name in x.replicas) for r in rooms}
        movable = [r for r in candidates if hosted[r.name] == r.variants]  # every variant on it judged
        if not movable:
            return None, cool_since
        drain = min(movable, key=lambda r: (r.threads, r.cpu or 0.0)).name
    busy = {a.variant for a in actions}
    cpu = {r.name: r.cpu or 0.0 for r in rooms}
    why = f"consolidating: worker {drain} drains (the others would run at {without(rooms, drain):.0%} CPU)"
    for load in loads:
        v = load.variant
        if drain not in load.replicas or v.name in busy:
            continue
        here = load.instances_on(drain)
        _, _, demand = state_of(load, cfg)
        rest = capacity_rps(load.profile, v.max_batch) * (load.slots - here) * (1 - cfg.headroom)
        if len(load.replicas) > 1 and rest >= demand:
            actions.append(
                Action("unload", v.name, drain, f"{why}; {v.name}'s other replicas carry {demand:.0f} rows/s")
            )
            continue
        need_mb, need_cores = load.profile.peak_memory_mb, max(1, v.threads)
        dests = [
            w
            for w in names - {drain}
            if spare.get(w, 0) >= need_cores and free.get(w, 0.0) >= need_mb and cpu[w] < cfg.worker_cool
        ]
        if not dests:
            return None, cool_since  # nowhere to move it: the drain ends
        to = max(dests, key=lambda w: (w in load.replicas, -spare[w], w))  # grow where it runs, else pack
        spare[to] -= need_cores
        free[to] -= need_mb
        if to in load.replicas:
            more = load.instances_on(to) + 1
            actions.append(Action("grow", v.name, to, f"{why}; {v.name} moves to {to} ({more} instance(s))", more))
        else:
            actions.append(Action("replicate", v.name, to, f"{why}; {v.name} moves to {to}"))
    return drain, cool_since
