"""What one simulated contender did, as the JSON ``infaas sim`` writes: violations by kind, goodput,
latency quantiles, core-seconds and cost (per pool), loads and scaling actions, per-app figures and
per-second series for the plots."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from infaas.sim.engine import quantile

if TYPE_CHECKING:
    from infaas.sim.run import Simulation

VIOLATIONS = ("late", "dropped", "under_accuracy", "unmeetable")


def summarize(sim: Simulation) -> dict:
    reqs, end = sim.requests, sim.end
    span = max(sim.trace[-1][0], 1e-9) if sim.trace else 1e-9
    violations = Counter(r.violation for r in reqs if r.violation)
    served = [r for r in reqs if r.status == "served"]
    good = [r for r in served if r.violation is None]
    lat = sorted((r.finished - r.arrival) * 1000 for r in served)
    pools = {}
    for pool in sim.fleet.pools:
        core_s = sum(w.core_seconds(end) for w in sim.workers if w.pool is pool)
        pools[pool.kind or "any"] = {
            "core_seconds": round(core_s, 3),
            "cost_usd": round(core_s / 3600 * pool.price_core_hour, 6),
            "workers": sum(1 for w in sim.workers if w.pool is pool),
        }
    per_app = {}
    for name in sorted(sim.apps):
        mine = [r for r in reqs if r.app == name]
        per_app[name] = {
            "requests": len(mine),
            "violations": sum(1 for r in mine if r.violation),
            "variants": dict(sorted(Counter(r.variant for r in mine if r.status == "served").items())),
        }
    return {
        "contender": sim.contender,
        "requests": len(reqs),
        "served": len(served),
        "violations": {k: violations.get(k, 0) for k in VIOLATIONS},
        "violation_rate": round(sum(violations.values()) / max(1, len(reqs)), 6),
        "goodput_rps": round(len(good) / span, 4),
        "latency_ms": {"p50": _rounded(quantile(lat, 0.5)), "p99": _rounded(quantile(lat, 0.99))},
        "core_seconds": round(sum(w.core_seconds(end) for w in sim.workers), 3),
        "cost_usd": round(sum(w.core_seconds(end) / 3600 * w.pool.price_core_hour for w in sim.workers), 6),
        "pools": pools,
        "loads": sim.loads,
        "loads_at_start": sim.loads_at_start,
        "events": sim.event_count,
        "actions": dict(sorted(Counter(d["kind"] for d in sim.decisions if d["kind"] != "blocked").items())),
        "blocked": sum(1 for d in sim.decisions if d["kind"] == "blocked"),
        "workers": {
            "start": sum(p.workers for p in sim.fleet.pools) if not sim.static else len(sim.workers),
            "peak": max((n for _, n, _ in sim.timeline), default=len(sim.workers)),
            "end": sum(1 for w in sim.workers if w.removed is None),
        },
        "apps": per_app,
        "series": series(sim),
        "timeline": [list(x) for x in sim.timeline],
        "decisions": sim.decisions,
    }


def series(sim: Simulation) -> dict[str, list]:
    """Per simulated second: requests and violations (by arrival), live workers and their cost."""
    n = max(1, math.ceil(sim.end))
    requests, violations, workers = [0] * n, [0] * n, [0] * n
    usd = [0.0] * n
    for r in sim.requests:
        requests[int(r.arrival)] += 1
        if r.violation:
            violations[int(r.arrival)] += 1
    for w in sim.workers:
        gone = w.removed if w.removed is not None else sim.end
        for t in range(math.ceil(w.started), min(n, math.ceil(gone))):
            workers[t] += 1
            usd[t] += w.cores * w.pool.price_core_hour / 3600
    return {
        "requests": requests,
        "violations": violations,
        "workers": workers,
        "cost_usd": [round(x, 9) for x in usd],
    }


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
