"""``infaas sim``: what infaas (and the contenders) would do with a trace on a fleet, without the fleet."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infaas.cli.common import err
from infaas.cli.tables import console

CHOICES = ("infaas", "infaas-original", "static-peak", "static-mean", "all")


def add_sim_flags(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="a data directory: its variants and their profiles on this machine's kind")
    src.add_argument(
        "--catalog",
        metavar="CSV",
        help="profiles measured anywhere, one row per variant, hardware kind and batch size: "
        "task,architecture,variant,hardware,batch,p50_ms,p99_ms,accuracy,memory_mb,load_ms[,threads][,format]",
    )
    src.add_argument(
        "--synthetic",
        metavar="SPEC",
        help="a generated catalog, e.g. archs=100,variants=20,tasks=10,seed=0: tasks are named task0 .. "
        "task{tasks-1} (use these names in --apps), architectures arch0 .., assigned round-robin",
    )
    trace = p.add_mutually_exclusive_group(required=True)
    trace.add_argument("--trace", help="t_s,app CSV (infaas.workload's format)")
    trace.add_argument("--minutes", help="minute,app,count CSV: arrivals spread over each minute (Gamma, --cv)")
    p.add_argument("--cv", type=float, default=1.0, help="--minutes: coefficient of variation of gaps (1: Poisson)")
    p.add_argument("--apps", required=True, help="apps JSON: name, task, objective (latency_ms, min_accuracy)")
    p.add_argument(
        "--fleet",
        default="workers=2,cores=1",
        help="workers=N,cores=C[,min=N][,max=M][,memory_mb=MB][,price=USD per core-hour] (default workers=2,cores=1; "
        "min: the fewest the controller keeps, default workers; max default 4 x workers); pools of hardware "
        "kinds (the --catalog's hardware column): KIND:fields;KIND:fields, e.g. cpu:workers=2;gpu:workers=1,max=2",
    )
    p.add_argument("--policy", default="all", choices=CHOICES, help="the contender to run, or all four side by side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tail-s", type=float, default=60.0, help="simulated seconds after the last request (scale-down)")
    p.add_argument(
        "--overhead-ms",
        type=float,
        default=0.0,
        help="the serving path's own time per request (HTTP, frontend, wire to the worker), which profiles do "
        "not hold; bench/sim/validate measures it on this machine (default 0: only the workers' time)",
    )
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results here (no wall-clock figures)")
    p.add_argument("--plots", metavar="DIR", help="write violations, workers and cost over time here (PNG)")


def cmd_sim(args) -> None:
    from infaas.settings import load_settings
    from infaas.sim.catalog import SimCatalog, from_csv, parse_synthetic, synthetic
    from infaas.sim.compare import simulate
    from infaas.sim.fleet import Fleet
    from infaas.sim.run import CONTENDERS
    from infaas.sim.scenario import Scenario
    from infaas.workload import load_apps, read_minute_counts, read_trace

    settings = load_settings()
    fleet = Fleet.parse(args.fleet, settings.price_cpu_core_hour, settings.price_gpu_hour)
    apps = load_apps(args.apps)
    if args.trace:
        trace = read_trace(args.trace, apps)
    else:
        trace = read_minute_counts(args.minutes, apps, cv=args.cv, seed=args.seed)
    if args.data_dir:
        catalog = SimCatalog.from_data_dir(args.data_dir)
    elif args.catalog:
        catalog = from_csv(args.catalog, fleet.price_for)
    else:
        catalog = synthetic(**parse_synthetic(args.synthetic), price_core_hour=fleet.pools[0].price_core_hour)
    contenders = list(CONTENDERS) if args.policy == "all" else [args.policy]
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        bars = {c: progress.add_task(f"{c:16}", total=len(trace)) for c in contenders}
        result = simulate(
            contenders,
            Scenario(catalog, apps, trace, fleet, settings, args.seed, args.tail_s, args.overhead_ms),
            progress=lambda c, done, total: progress.update(bars[c], completed=done),
        )
    wall = time.perf_counter() - started
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    console.print(summary_table(result))
    if args.plots:
        from infaas.sim.plots import plot

        paths = plot(result, args.plots)
        console.print(f"[dim]plots: {', '.join(str(p) for p in paths)}[/]")
    console.print(
        f"[dim]{len(trace)} requests over {result['trace']['seconds']:g} simulated s on {fleet.describe()}; "
        f"profiles of {result['hardware'] or 'unknown hardware'}; seed {args.seed}; "
        f"simulated in {wall:.1f} s of wall clock[/]"
        + f"\n[dim]oracle bound (perfect foresight, free loads, only compute paid): "
        f"${result['oracle']['cost_usd']:.4f}, {result['oracle']['core_seconds']:.0f} core-s"
        + (
            f"; {result['oracle']['unservable']} request(s) no variant serves in time"
            if result["oracle"]["unservable"]
            else ""
        )
        + "[/]"
        + (f"\n[dim]results: {args.json_out}[/]" if args.json_out else "")
    )


def summary_table(result: dict) -> Table:
    """The contenders side by side, one row per figure."""
    runs = result["contenders"]
    table = Table(title="simulated: what each contender would do with this trace")
    table.add_column("")
    for r in runs:
        table.add_column(r["contender"], justify="right")

    def row(label: str, cell) -> None:
        table.add_row(label, *(cell(r) for r in runs))

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"

    row("requests", lambda r: f"{r['requests']:,}")
    row("violations", lambda r: f"{sum(r['violations'].values()):,} ({r['violation_rate']:.1%})")
    for kind in ("late", "dropped", "under_accuracy", "unmeetable"):
        row(f"  {kind.replace('_', ' ')}", lambda r, k=kind: f"{r['violations'][k]:,}")
    row("goodput (req/s)", lambda r: f"{r['goodput_rps']:.1f}")
    row("latency p50 / p99 (ms)", lambda r: f"{ms(r['latency_ms']['p50'])} / {ms(r['latency_ms']['p99'])}")
    row("cost (core-s)", lambda r: f"{r['core_seconds']:.0f}")
    row("cost (USD)", lambda r: f"{r['cost_usd']:.4f}")
    if len(runs[0]["pools"]) > 1:
        for kind in runs[0]["pools"]:
            row(
                f"  {kind} (workers, USD)",
                lambda r, k=kind: f"{r['pools'][k]['workers']}, {r['pools'][k]['cost_usd']:.4f}",
            )
    row("cost / oracle bound", lambda r: "-" if r["cost_vs_oracle"] is None else f"{r['cost_vs_oracle']:.1f}x")
    row("workers start / peak / end", lambda r: "{start} / {peak} / {end}".format(**r["workers"]))
    row("loads", lambda r: str(r["loads"]))
    row(
        "scaling actions",
        lambda r: ", ".join(f"{k} {n}" for k, n in r["actions"].items()) or "none",
    )
    return table
