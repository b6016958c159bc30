"""Static provisioning, sized from a trace as a careful operator would: each app pinned to the
variant its user would pick by hand, on replicas enough for the app's peak (or mean) rate, never
changed. ``bench/workload`` sizes its static servers with these; the simulator its static contenders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from infaas.policy.autoscale import capacity_rps
from infaas.registry import Profile, Variant
from infaas.workload import App

HEADROOM = 0.95  # a static replica is planned at 95 % of its capacity


def trace_rates(trace: list[tuple[float, str]], apps: list[App]) -> dict[str, dict[str, float]]:
    """Per app, its mean rate over the trace and its peak in any 1-s window (requests per second)."""
    span = trace[-1][0] if trace else 0.0
    mean = {a.name: sum(1 for _, n in trace if n == a.name) / max(span, 1e-9) for a in apps}
    peak: dict[str, float] = {}
    for a in apps:
        counts: dict[int, int] = {}
        for t, n in trace:
            if n == a.name:
                counts[int(t)] = counts.get(int(t), 0) + 1
        peak[a.name] = float(max(counts.values(), default=0))
    return {"mean": mean, "peak": peak}


def pinned(archs: Mapping[str, tuple[str, float | None]], variants: Iterable[Variant], app: App, cores: int) -> Variant:
    """The variant a user picks by hand: the most accurate architecture of the app's task meeting
    its floor (``archs``: architecture -> (task, accuracy)), its ONNX Runtime fp32 variant (a CPU one
    if any) with the most threads that fit ``cores``, then the largest max batch. A user picks it
    whatever the profiler's verdict: one rejected as dominated (by an INT8 or OpenVINO form) still
    runs, and is served when named."""
    floor = app.objective.get("min_accuracy")
    fit = [(acc, a) for a, (task, acc) in archs.items() if task == app.task and acc is not None]
    fit = [(acc, a) for acc, a in fit if floor is None or acc >= floor]
    if not fit:
        raise ValueError(f"app {app.name}: no architecture of {app.task} meets min_accuracy {floor}")
    arch = max(fit)[1]
    fp32 = [
        v
        for v in variants
        if v.architecture == arch
        and v.format == "onnx-fp32"
        and v.threads <= cores
        and v.status in ("ready", "rejected")
    ]
    if not fp32:
        raise ValueError(f"app {app.name}: {arch} has no runnable fp32 variant on at most {cores} core(s)")
    return max(fp32, key=lambda v: (v.provider == "cpu", v.threads, v.max_batch, v.name))


def static_plan(
    apps: list[App],
    rates: Mapping[str, float],
    chosen: Mapping[str, tuple[Variant, Profile]],
    max_workers: int,
    cores: int = 1,
) -> tuple[int, float, dict[str, tuple[str, int]]]:
    """Workers, cores of work, and (variant, replicas) per app for ``rates`` (peak or mean), with each
    app's ``chosen`` variant and its profile; one replica per worker at most, workers of ``cores``
    cores each holding as many replicas as their cores run."""
    cores_needed, plan = 0.0, {}
    for app in apps:
        v, prof = chosen[app.name]
        need = rates.get(app.name, 0.0) / (capacity_rps(prof, v.max_batch) * HEADROOM)
        cores_needed += need * v.threads
        plan[app.name] = (v.name, max(1, math.ceil(need)))
    most_replicas = max((r for _, r in plan.values()), default=1)
    workers = min(max_workers, max(1, most_replicas, math.ceil(cores_needed / cores - 1e-9)))
    return workers, cores_needed, {a: (n, min(r, workers)) for a, (n, r) in plan.items()}


def static_fleet(sizing: str, catalog, apps: list[App], trace: list[tuple[float, str]], fleet) -> tuple[dict, list]:
    """The static contender's whole layout on a (simulated) fleet, sized for ``sizing`` ("peak" or
    "mean"): each app's pinned variant in the first pool that runs it. Returns the plan (app ->
    (variant, replicas)) and, per pool used, ``(pool, workers, {variant: replicas})`` (apps may pin
    the same variant: it gets the most replicas any of them needs)."""
    rates = trace_rates(trace, apps)[sizing]
    archs = {a: (t, catalog.accuracy.get(a)) for a, t in catalog.tasks.items()}
    plan: dict[str, tuple[str, int]] = {}
    layout = []
    for pool in fleet.pools:
        runs = [v for v in catalog.variants.values() if fleet.pool_for(catalog.kind_of(v.name)) is pool]
        mine, chosen = [], {}
        for app in apps:
            if app.name in plan:
                continue
            try:
                v = pinned(archs, runs, app, pool.cores)
            except ValueError:
                continue  # another pool runs it
            mine.append(app)
            chosen[app.name] = (v, catalog.profiles[v.name])
        if not mine:
            continue
        workers, _, here = static_plan(mine, rates, chosen, pool.most, pool.cores)
        plan.update(here)
        wanted: dict[str, int] = {}
        for name, replicas in here.values():
            wanted[name] = max(wanted.get(name, 0), replicas)
        layout.append((pool, workers, wanted))
    for app in apps:
        if app.name not in plan:  # the error names why, for the first pool
            pinned(archs, catalog.variants.values(), app, fleet.cores)
            raise ValueError(f"app {app.name}: no pool of the fleet runs its hand-picked variant")
    return plan, layout
