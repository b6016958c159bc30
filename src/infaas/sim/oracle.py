"""A lower bound on what serving a trace within every objective can cost.

For each app, the cheapest way to serve one request within its objective: over every variant of its
task that a pool of the fleet runs as profiled (its kind, threads within a worker's cores) and that
meets the app's accuracy floor, and over every measured batch size ``b`` whose p50 alone fits the
app's latency objective, the price of ``threads x p50(b) / b`` core-seconds in that pool. Each
second's bound is its requests times their app's cheapest price; the trace's bound is their sum.

Why it is a lower bound: perfect foresight, loads that are free and instant, workers that are paid
only for the core-seconds they compute (no idle time, no whole workers, no floor), every batch full
at the cheapest size, and the p50 standing for every batch's time (a real batch is late past it half
the time). Any placement that serves every request within its objective spends at least this: each
request costs at least its share of some batch's compute time at some pool's price. A contender that
drops or serves late may cost less; its violations say so. (A linear program over placements per
second gives the same bound once integrality is relaxed: with no capacity coupling between apps
beyond price, each app's cheapest rate is optimal on its own.)
"""

from __future__ import annotations

from dataclasses import dataclass

from infaas.sim.catalog import SimCatalog
from infaas.sim.fleet import Fleet
from infaas.workload import App


@dataclass(frozen=True)
class Cheapest:
    variant: str
    batch: int
    core_s: float  # core-seconds per request
    usd: float  # per request


def cheapest(catalog: SimCatalog, app: App, fleet: Fleet) -> Cheapest | None:
    """The cheapest way to serve one of ``app``'s requests within its objective (None: no way)."""
    floor, latency = app.objective.get("min_accuracy"), app.objective.get("latency_ms")
    best: Cheapest | None = None
    for v in catalog.of_task(app.task):
        p = catalog.profiles.get(v.name)
        pool = fleet.pool_for(catalog.kind_of(v.name))
        if v.status != "ready" or p is None or pool is None or v.threads > pool.cores:
            continue
        if floor is not None and (v.accuracy is None or v.accuracy < floor):
            continue
        for b, ms in sorted(p.latency_p50_ms.items()):
            if b > v.max_batch or (latency is not None and ms > latency):
                continue
            core_s = v.threads * ms / 1000 / b
            usd = core_s / 3600 * pool.price_core_hour
            if best is None or (usd, core_s) < (best.usd, best.core_s):
                best = Cheapest(v.name, b, core_s, usd)
    return best


def oracle(catalog: SimCatalog, apps: list[App], trace: list[tuple[float, str]], fleet: Fleet) -> dict:
    """The bound for ``trace``: in all and per second (core-seconds and USD), each app's cheapest way,
    and the requests no variant can serve within their objective (left out of the bound)."""
    ways = {a.name: cheapest(catalog, a, fleet) for a in apps}
    seconds = int(trace[-1][0]) + 1 if trace else 0
    core_s, usd = [0.0] * seconds, [0.0] * seconds
    unservable = 0
    for t, name in trace:
        way = ways[name]
        if way is None:
            unservable += 1
            continue
        core_s[int(t)] += way.core_s
        usd[int(t)] += way.usd
    return {
        "core_seconds": round(sum(core_s), 6),
        "cost_usd": round(sum(usd), 9),
        "unservable": unservable,
        "apps": {
            name: None if w is None else {"variant": w.variant, "batch": w.batch, "core_ms": round(w.core_s * 1000, 6)}
            for name, w in sorted(ways.items())
        },
        "per_second_usd": [round(x, 9) for x in usd],
    }
