"""The simulator at cluster scale: what infaas, the original INFaaS rules and static provisioning do
with an hour of bursty diurnal load on 64 workers x 16 cores, against the oracle's cost bound.

- Catalog: ``--synthetic archs=100,variants=20,tasks=10`` (bench/decision's generator) with every
  batch time multiplied by ``--scale`` (default 2500: 0.125-12.5 s a row, generative- or video-sized
  models). Heavy models keep the request count within what a Python simulator replays in minutes
  on 2 cores while an hour of traffic still needs most of a 1,024-core fleet at its peak.
- Apps: 50, app i on task i mod 10, an accuracy floor from {none, 0.6, 0.7, 0.8, 0.9} (none when
  the task has nothing that accurate) and a latency objective of 2, 4 or 8 times the batch-1 p50 of
  its hand-picked variant (the most accurate architecture's fp32: what a static server runs for
  it), so that every contender can serve every app. Seeded.
- Load: per-minute counts over ``--minutes`` (60), a diurnal curve from 25 % to 100 % of the peak
  (at the middle), shared among apps by Zipf weights (s = 0.8); inside each minute arrivals are a
  Gamma process with a coefficient of variation drawn per app from 2 to 4 (bursty). The peak is
  sized so that static provisioning (each app's hand-picked variant at 95 % of its capacity) needs
  ``--peak-share`` (0.8) of the fleet's cores: the peak takes most of the fleet.
- Contenders: infaas, infaas-original, static-peak, static-mean, and the oracle bound.

Writes bench/results/sim-scale.json (with the wall time and event count of each contender) and
PNG plots under docs/sim/scale; prints the table and the targets.

    bench/sim/scale [--minutes 60] [--contenders ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from infaas.cli.sim import summary_table  # noqa: E402
from infaas.policy.autoscale import capacity_rps  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.sim import CONTENDERS, Fleet, Scenario, Simulation, synthetic  # noqa: E402
from infaas.sim.catalog import SimCatalog  # noqa: E402
from infaas.sim.oracle import oracle  # noqa: E402
from infaas.sim.plots import plot  # noqa: E402
from infaas.sim.static import HEADROOM, pinned  # noqa: E402
from infaas.workload import App, minute_arrivals  # noqa: E402

console = Console()
FLEET = "workers=24,cores=16,min=1,max=64,memory_mb=65536"  # up to 64 workers; infaas starts with 24


def make_apps(catalog: SimCatalog, n: int, rng: random.Random, cores: int) -> list[App]:
    """``n`` apps over the catalog's tasks, each with an accuracy floor and a latency objective its
    hand-picked variant (what a static server would run for it) meets alone at batch 1, 2 to 8
    times over: every contender can serve every app; the cheaper ways are for the policies to find."""
    tasks = catalog.task_names
    archs = {a: (t, catalog.accuracy.get(a)) for a, t in catalog.tasks.items()}
    apps = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        floor = rng.choice([None, 0.6, 0.7, 0.8, 0.9])
        if not any(
            floor is None or (v.accuracy or 0.0) >= floor for v in catalog.of_task(task) if v.format == "onnx-fp32"
        ):
            floor = None
        app = App(f"app{i}", task, {} if floor is None else {"min_accuracy": floor})
        hand = pinned(archs, catalog.variants.values(), app, cores)
        app.objective["latency_ms"] = round(catalog.profiles[hand.name].latency_p50_ms[1] * rng.choice([2, 4, 8]), 1)
        apps.append(app)
    return apps


def diurnal_trace(
    catalog: SimCatalog, apps: list[App], fleet: Fleet, minutes: int, peak_share: float, seed: int
) -> tuple[list[tuple[float, str]], list[tuple[int, str, int]], float]:
    """(trace, per-minute counts, peak requests/s) for the load described in the module's note."""
    rng = np.random.default_rng(seed)
    weights = np.array([1 / (i + 1) ** 0.8 for i in range(len(apps))])
    weights /= weights.sum()
    archs = {a: (t, catalog.accuracy.get(a)) for a, t in catalog.tasks.items()}
    core_s = []  # per request, as static provisioning runs it: the hand-picked variant at its capacity
    for a in apps:
        v = pinned(archs, catalog.variants.values(), a, fleet.cores)
        core_s.append(v.threads / (capacity_rps(catalog.profiles[v.name], v.max_batch) * HEADROOM))
    cores = sum(p.most * p.cores for p in fleet.pools)
    peak_rps = peak_share * cores / float(weights @ np.array(core_s))
    cvs = rng.uniform(2.0, 4.0, len(apps))
    rows: list[tuple[int, str, int]] = []
    trace: list[tuple[float, str]] = []
    for m in range(minutes):
        shape = 0.25 + 0.75 * (1 - np.cos(2 * np.pi * (m + 0.5) / minutes)) / 2
        for i, app in enumerate(apps):
            count = int(rng.poisson(peak_rps * shape * weights[i] * 60))
            rows.append((m, app.name, count))
            trace += [(m * 60.0 + float(t), app.name) for t in minute_arrivals(count, float(cvs[i]), rng)]
    trace.sort()
    return trace, rows, peak_rps


def targets(runs: dict[str, dict]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets at scale, each with the measured figure."""

    def vio(name: str) -> int:
        return sum(runs[name]["violations"].values())

    out = []
    if {"infaas", "static-mean"} <= set(runs):
        ratio = vio("static-mean") / max(1, vio("infaas"))
        out.append(("violations: static-mean / infaas >= 3x", f"{ratio:.2f}x", ratio >= 3))
    if {"infaas", "static-peak"} <= set(runs):
        ratio = runs["static-peak"]["cost_usd"] / runs["infaas"]["cost_usd"]
        out.append(("cost: static-peak / infaas >= 2x", f"{ratio:.2f}x", ratio >= 2))
    if {"infaas", "infaas-original"} <= set(runs):
        fewer = vio("infaas") < vio("infaas-original")
        cheaper = runs["infaas"]["cost_usd"] <= runs["infaas-original"]["cost_usd"]
        text = f"{vio('infaas'):,} vs {vio('infaas-original'):,} violations; ${runs['infaas']['cost_usd']:.2f} vs ${runs['infaas-original']['cost_usd']:.2f}"
        out.append(("infaas vs infaas-original: fewer violations, no dearer", text, fewer and cheaper))
    if "infaas" in runs and runs["infaas"]["cost_vs_oracle"] is not None:
        r = runs["infaas"]["cost_vs_oracle"]
        out.append(("cost: infaas / oracle bound <= 1.5x", f"{r:.2f}x", r <= 1.5))
    return out


def decision_table(results: list[dict], minutes: int) -> Table:
    """From each autoscaling contender's decision log: its actions per quarter of the run, and what
    drove the workers it added after the peak (the middle of the run)."""
    table = Table(title="the controller's decisions, per quarter of the run (from the simulator's decision log)")
    table.add_column("contender")
    table.add_column("kind")
    quarter = minutes * 60 / 4
    for i in range(4):
        table.add_column(f"{i * minutes / 4:g}-{(i + 1) * minutes / 4:g} min", justify="right")
    for r in results:
        log = r.get("decisions") or []
        for kind in sorted({d["kind"] for d in log}):
            counts = [
                sum(1 for d in log if d["kind"] == kind and i * quarter <= d["t"] < (i + 1) * quarter) for i in range(4)
            ]
            table.add_row(r["contender"], kind, *(f"{n:,}" for n in counts))
        late = [d for d in log if d["kind"] == "add_worker" and d["t"] >= minutes * 30]
        if late:
            why = Counter(d["variant"] for d in late).most_common(3)
            table.add_row(
                r["contender"], "after the peak, add_worker for", ", ".join(f"{v} x{n}" for v, n in why), "", "", ""
            )
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--scale", type=float, default=2500.0)
    p.add_argument("--peak-share", type=float, default=0.8)
    p.add_argument("--apps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--quick", action="store_true", help="10 simulated minutes")
    p.add_argument("--out", help="default bench/results/sim-scale.json (--quick: sim-scale-quick.json)")
    p.add_argument("--plots", help="default docs/sim/scale (--quick: bench/results/sim-scale-quick)")
    args = p.parse_args()
    minutes = 10 if args.quick else args.minutes
    # a quick run never overwrites the full run's results and the plots the docs show
    results = ROOT / "bench" / "results"
    args.out = args.out or str(results / ("sim-scale-quick.json" if args.quick else "sim-scale.json"))
    args.plots = args.plots or str(results / "sim-scale-quick" if args.quick else ROOT / "docs" / "sim" / "scale")
    catalog = synthetic(100, 20, 10, args.seed, scale=args.scale)
    fleet = Fleet.parse(FLEET)
    apps = make_apps(catalog, args.apps, random.Random(args.seed), fleet.cores)
    trace, rows, peak_rps = diurnal_trace(catalog, apps, fleet, minutes, args.peak_share, args.seed)
    # the operator of these models sets the server's default deadline (what an explicit-variant request
    # of a static contender gets) to the slowest app's objective, as `--default-timeout-s` would
    longest_s = max(a.objective["latency_ms"] for a in apps) / 1000
    settings = Settings(default_timeout_s=longest_s, request_timeout_s=max(60.0, longest_s))
    scenario = Scenario(catalog, apps, trace, fleet, settings, seed=args.seed, tail_s=120)
    scenario.check()
    cpu = _cpu()
    console.print(
        f"[bold]{len(trace):,} requests[/] over {minutes} simulated minutes (peak {peak_rps:.0f} req/s), "
        f"{len(apps)} apps, {len(catalog.variants):,} variants; fleet {fleet.describe()}; on {cpu}"
    )
    results, walls = [], {}
    for name in args.contenders:
        started = time.perf_counter()
        with console.status(f"{name} ..."):
            r = Simulation(name, scenario).run()
        walls[name] = round(time.perf_counter() - started, 1)
        results.append(r)
        console.print(f"  {name}: {walls[name]:.1f} s of wall clock, {r['events']:,} events")
    bound = oracle(catalog, apps, trace, fleet)
    for r in results:
        r["cost_vs_oracle"] = round(r["cost_usd"] / bound["cost_usd"], 4) if bound["cost_usd"] else None
    result = {
        "oracle": bound,
        "fleet": fleet.describe(),
        "hardware": "synthetic",
        "seed": args.seed,
        "trace": {"requests": len(trace), "seconds": round(trace[-1][0], 3), "peak_rps": round(peak_rps, 1)},
        "contenders": results,
    }
    console.print(summary_table(result))
    console.print(decision_table(results, minutes))
    console.print(f"oracle bound: ${bound['cost_usd']:.2f} ({bound['core_seconds']:,.0f} core-s)")
    checks = targets({r["contender"]: r for r in results})
    for what, figure, ok in checks:
        console.print(f"  {'[green]met[/]' if ok else '[red]missed[/]'}  {what}: {figure}")
    total_wall = sum(walls.values())
    console.print(f"simulated in {total_wall:.0f} s of wall clock on {cpu} (target: under 300 s for the full run)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in results:
        r.pop("timeline", None)
    report = {**result, "cpu": cpu, "wall_s": walls, "minutes": minutes, "targets": checks, "per_minute": rows}
    out.write_text(json.dumps(report) + "\n")
    paths = plot(result, args.plots, title=f"{len(trace):,} requests, {len(apps)} apps, 64 workers x 16 cores")
    console.print(f"[dim]{out}; plots: {', '.join(str(x) for x in paths)}[/]")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {len(__import__('os').sched_getaffinity(0))} cores"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
