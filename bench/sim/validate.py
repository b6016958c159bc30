"""The simulator checked against the real system: the ``bench/workload`` trace, replayed by real
servers (``bench/workload``'s own code: a fresh ``infaas serve`` per contender, 1-core workers, at
most ``--cores``) and by the simulator (``infaas sim``'s code on the same data directory, so the same
profiles, the same trace, the same fleet bounds and the same settings), printed side by side.

Figures, per contender, all over the trace's own span (the real run's tail, while the last answers
come back, is left out on both sides):

- violation rate (late, under the accuracy floor, refused or failed): target within 2 points;
- goodput (requests a second within their objective), billed core-seconds (workers alive x their
  cores), loads after the start (cold starts, replicas, upgrades) and scaling actions: target within
  15 % (or 2 of a count under 14).

    bench/sim/validate [--quick] [--contenders infaas static-peak ...] [--real-from F]

``--quick`` replays the 40-s trace (the full run: 120 s). The models are profiled once per hardware
kind into ``.cache/workload`` (about 4 minutes the first time, shared with ``bench/workload``).
``--real-from`` takes the real runs from an earlier validation's JSON (to iterate on the simulator
without rerunning the servers). Writes ``bench/results/sim-validate[-quick].json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from infaas.policy.scaling import SCALING_KINDS  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.sim import Fleet, Scenario, SimCatalog, Simulation  # noqa: E402
from infaas.workload import generate, load_apps, read_trace  # noqa: E402

console = Console()


def _workload_bench():
    """bench/workload/run.py as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("workload_bench", ROOT / "bench" / "workload" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_figures(r: dict, span: float) -> dict:
    """The real run's figures over the trace's span."""
    within = [s for s in r["samples"] if s["t"] <= span]
    return {
        "violation_rate": r["violation_rate"],
        "goodput_rps": r["goodput_rps"],
        "core_seconds": sum(0.5 * s["cores"] for s in within),
        "loads": r["loads"],
        "scaling_actions": r["scaling_actions"],
    }


def sim_figures(r: dict, span: float, cores: int) -> dict:
    """The simulated run's figures over the trace's span."""
    workers = r["series"]["workers"][: math.ceil(span)]
    return {
        "violation_rate": r["violation_rate"],
        "goodput_rps": r["goodput_rps"],
        "core_seconds": sum(workers) * cores,
        "loads": r["loads"] - r["loads_at_start"],
        "scaling_actions": sum(n for k, n in r["actions"].items() if k in SCALING_KINDS),
    }


def serving_path_ms(runs) -> float:
    """What the serving path adds to a request beyond the worker's queue and compute (HTTP both ways,
    the frontend, the wire to the worker), median over every answered request of the real runs: a
    property of the server and this machine, which the profiles (the worker alone) do not hold."""
    extra = [
        client_ms - queue_ms - compute_ms
        for r in runs
        for _, _, status, client_ms, _, _, _, queue_ms, compute_ms, _ in r["timeline"]
        if status == 200 and queue_ms is not None and compute_ms is not None
    ]
    return float(statistics.median(extra)) if extra else 0.0


def agrees(key: str, real: float, sim: float) -> bool:
    if key == "violation_rate":
        return abs(sim - real) <= 0.02
    if key in ("loads", "scaling_actions") and max(real, sim) < 14:
        return abs(sim - real) <= 2
    return abs(sim - real) <= 0.15 * max(abs(real), 1e-9)


FIGURES = {
    "violation_rate": ("violations", lambda x: f"{100 * x:.1f} %"),
    "goodput_rps": ("goodput req/s", lambda x: f"{x:.1f}"),
    "core_seconds": ("core-s", lambda x: f"{x:.0f}"),
    "loads": ("loads", lambda x: f"{x:.0f}"),
    "scaling_actions": ("scaling actions", lambda x: f"{x:.0f}"),
}


def compare(real: dict[str, dict], sim: dict[str, dict]) -> tuple[Table, list[dict]]:
    table = Table(title="real run vs simulator (same trace, data directory, fleet bounds, settings)")
    table.add_column("contender")
    table.add_column("figure")
    for col in ("real", "simulated", "sim / real", ""):
        table.add_column(col, justify="right")
    rows = []
    for name in real:
        for key, (label, fmt) in FIGURES.items():
            a, b = real[name][key], sim[name][key]
            ok = agrees(key, a, b)
            ratio = f"{b / a:.2f}x" if a else ("-" if not b else "inf")
            if key == "violation_rate":
                ratio = f"{100 * (b - a):+.1f} pt"
            table.add_row(name, label, fmt(a), fmt(b), ratio, "[green]ok[/]" if ok else "[red]off[/]")
            rows.append({"contender": name, "figure": key, "real": a, "sim": b, "ok": ok})
        table.add_section()
    return table, rows


def main() -> None:
    wl = _workload_bench()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", default=str(ROOT / "bench" / "workload" / "apps.json"))
    p.add_argument("--trace", help="a t_s,app CSV (default: bench/workload's generated trace)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of generated trace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="the 40-s trace")
    p.add_argument("--contenders", nargs="+", choices=wl.CONTENDERS, default=list(wl.CONTENDERS))
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="at most this many 1-core workers")
    p.add_argument("--timeout-s", type=float, default=10.0, help="the real clients give up after this")
    p.add_argument("--cache", default=str(ROOT / ".cache" / "workload"))
    p.add_argument("--runtimes", default="onnxruntime,openvino", help="runtimes whose variants are generated")
    p.add_argument("--real-from", help="the real runs from an earlier validation's JSON")
    p.add_argument(
        "--overhead-ms", type=float, help="the serving path per request (default: measured in the real runs)"
    )
    p.add_argument("--out", help="default: bench/results/sim-validate[-quick].json")
    args = p.parse_args()
    apps = load_apps(args.apps)
    duration = 40.0 if args.quick else args.duration
    trace = read_trace(args.trace, apps) if args.trace else generate(apps, duration, args.seed)
    span = trace[-1][0] if trace else 0.0
    out = Path(args.out or ROOT / "bench" / "results" / f"sim-validate{'-quick' if args.quick else ''}.json")
    data = wl.prepare(Path(args.cache), Settings(runtimes=args.runtimes).runtimes)
    cpu = wl.local_kind().id
    console.print(f"[dim]{len(trace)} requests over {span:.0f} s; {args.cores} 1-core workers at most; on {cpu}[/]")

    started = time.monotonic()
    if args.real_from:
        earlier = json.loads(Path(args.real_from).read_text())
        real_runs = {r["contender"]: r for r in earlier["real"] if r["contender"] in args.contenders}
    else:
        real_runs = {}
        rates = wl.trace_rates(trace, apps)
        for kind in args.contenders:
            console.rule(f"real: {kind}")
            real_runs[kind] = wl.run_contender(kind, data, apps, trace, args.cores, rates, args.timeout_s)
    real_wall = time.monotonic() - started

    path_ms = args.overhead_ms if args.overhead_ms is not None else serving_path_ms(real_runs.values())
    console.print(
        f"serving path per request (client latency - the worker's queue and compute, median of the real "
        f"answers): {path_ms:.2f} ms{' (given)' if args.overhead_ms is not None else ''}"
    )
    settings = Settings()
    fleet = Fleet.parse(f"workers=1,cores=1,min=1,max={args.cores}", settings.price_cpu_core_hour)
    scenario = Scenario(SimCatalog.from_data_dir(data), apps, trace, fleet, settings, args.seed, 0.0, path_ms)
    scenario.check()
    started = time.monotonic()
    sim_runs = {}
    for kind in real_runs:
        r = Simulation(kind, scenario).run()
        r.pop("timeline", None)
        sim_runs[kind] = r
    sim_wall = time.monotonic() - started

    real = {k: real_figures(r, span) for k, r in real_runs.items()}
    sim = {k: sim_figures(r, span, 1) for k, r in sim_runs.items()}
    table, rows = compare(real, sim)
    console.print(table)
    kept = sum(r["ok"] for r in rows)
    console.print(
        f"{kept} of {len(rows)} figures within target; real runs {real_wall:.0f} s, simulation {sim_wall:.1f} s "
        f"of wall clock on {cpu}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cpu": cpu,
                "trace": {"requests": len(trace), "seconds": span},
                "overhead_ms": path_ms,
                "figures": rows,
                "real": list(real_runs.values()),
                "sim": list(sim_runs.values()),
            },
            indent=1,
        )
        + "\n"
    )
    console.print(f"[dim]wrote {out}[/]")


if __name__ == "__main__":
    main()
