"""Decision time of model-less selection: p50/p99 with 100 architectures x 20 variants registered.

Builds a synthetic catalog (one task, 100 architectures, 20 profiled variants each, accuracies
0.5-0.99, costs and latency fits spread over two orders of magnitude: the simulator's
``--synthetic`` generator, :func:`infaas.sim.catalog.synthetic`), loads one variant per
architecture on one of 4 workers with random rows in flight, then times the data plane's
selection step for random objectives: building the live snapshot of the loaded variants plus
`policy.select_sorted` over the cost-sorted options (cached per scope, as the data plane does;
live in-flight counts are read lazily for the variants the scan reaches). Target: p99 < 50 µs.
Reported apart: decisions that select a variant, and objectives nothing meets (the 400 path,
which scans every variant to name the closest alternative).

    python bench/decision/run.py [--queries 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from infaas.policy import Objective, Unreachable, select_sorted  # noqa: E402
from infaas.sim.catalog import synthetic  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--archs", type=int, default=100)
    p.add_argument("--variants", type=int, default=20)
    args = p.parse_args()
    rng = random.Random(0)
    index = synthetic(args.archs, args.variants, tasks=1, rng=rng).index("task0", cores=2)
    ordered = index.ordered
    loaded_names = {f"arch{a}.v{rng.randrange(args.variants)}" for a in range(args.archs)}
    workers = [f"w{i}" for i in range(4)]
    placement = {n: rng.choice(workers) for n in sorted(loaded_names)}  # sorted: reproducible
    on_worker = {w: {n for n, pw in placement.items() if pw == w} for w in workers}
    in_flight = {n: rng.randrange(0, 40) for n in sorted(loaded_names)}
    loaded = [o for o in ordered if o.variant.name in placement]  # cached by the data plane
    objectives = [
        Objective(
            latency_ms=rng.choice([None, 2, 5, 20, 100, 1000]),
            min_accuracy=rng.choice([None, 0.6, 0.8, 0.9, 0.95, 0.985]),
            max_cost=rng.choice([None, None, 5e-5]),
        )
        for _ in range(256)
    ]

    times: dict[str, list[float]] = {"loaded": [], "cold": [], "unreachable": []}
    for q in range(args.queries):
        objective = objectives[q % len(objectives)]
        rows = rng.choice([1, 1, 2, 4])
        t0 = time.perf_counter_ns()

        # what the data plane does per request: the cached lists, live state read lazily
        def live(name: str) -> tuple[tuple[str, int], ...]:
            return tuple((w, in_flight[name]) for w in workers if name in on_worker[w])

        try:
            choice = select_sorted(objective, loaded, index, rows, "task t", live)
            outcome = "cold" if choice.worker is None else "loaded"
        except Unreachable:
            outcome = "unreachable"
        times[outcome].append((time.perf_counter_ns() - t0) / 1000)

    def summary(ts: list[float]) -> dict:
        ts = sorted(ts)
        if not ts:
            return {"count": 0}
        return {
            "count": len(ts),
            "p50_us": round(statistics.median(ts), 1),
            "p99_us": round(ts[min(len(ts) - 1, int(len(ts) * 0.99))], 1),
            "max_us": round(ts[-1], 1),
        }

    served = times["loaded"] + times["cold"]
    result = {
        "archs": args.archs,
        "variants_per_arch": args.variants,
        "queries": args.queries,
        "selected": summary(served),
        **{k: summary(v) for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "decision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
