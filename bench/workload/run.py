"""The INFaaS experiment: apps with their own objectives share one server under changing load.

Contenders, each a fresh ``infaas serve`` on the same cores (1-core workers, at most ``--cores``):

- ``static-peak`` / ``static-mean``: each app pinned to the variant its user would pick by hand
  (the most accurate architecture meeting its floor, fp32, one thread), pre-loaded through the
  repository extension on replicas sized for the app's peak (1-s windows) or mean rate, autoscaling
  off, explicit-variant requests (TensorFlow Serving / Clipper style);
- ``infaas-original``: the same model-less requests, served by the original INFaaS rules
  (``--policy infaas-original``, ``infaas.policy.original``), starting from one worker;
- ``infaas``: model-less requests (task + objective), autoscaling on, starting from one worker.

Every request of the trace is sent open loop at its time. Per contender and app: violations
(latency over the objective, accuracy under the floor, errors and drops), goodput (requests/s
within objective), mean accuracy delivered, billed core-seconds (cores x time each worker
existed, sampled every 0.5 s) and dollars at the configured core price, cold starts and scaling
actions (the decision log), and the error of ``predicted_ms`` against the server's ``total_ms``
per variant and per app, relative (p50 / p90 of |predicted - actual| / actual, and p90 over
requests above 2 ms) and against the app's latency objective (|predicted - actual| / objective).

    bench/workload/run [--quick] [--trace F --apps F] [--contenders infaas static-peak ...]

Apps file and trace format: ``infaas.workload``. Without ``--trace`` a trace is generated from the
apps (seeded) into ``bench/workload/traces/``. Profiles of the Lite family and the digits zoo are
made once per hardware kind and cached in ``.cache/workload``. Writes
``bench/results/workload.json`` and ``docs/workload-*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from infaas.app import free_port  # noqa: E402
from infaas.hardware import local_kind  # noqa: E402
from infaas.loadgen import build_request, replay  # noqa: E402
from infaas.policy.scaling import SCALING_KINDS  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.sim.static import pinned, trace_rates  # noqa: E402
from infaas.sim.static import static_plan as sized  # noqa: E402
from infaas.workload import SHORT_MS, App, error_stats, generate, load_apps, read_trace, write_trace  # noqa: E402

console = Console()
CONTENDERS = ("static-peak", "static-mean", "infaas-original", "infaas")
PREP_VERSION = "1"  # bump when the prepared data directory must be rebuilt


# ---- the models: registered and profiled once per hardware kind ------------------------------
def prepare(cache: Path, runtimes: list[str]) -> Path:
    """A data directory with EfficientNet-Lite0/1/2 (imagenet-classification) and the digits zoo,
    every variant of ``runtimes`` profiled (quick)."""
    from infaas.profiler import profile_architecture
    from infaas.zoo import build_family

    data = cache / local_kind().id / ("data" if runtimes == ["onnxruntime"] else "data-" + "-".join(runtimes))
    marker = data / f"prepared-{PREP_VERSION}"
    if marker.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    registry = Registry.open(data)
    try:
        with console.status("exporting EfficientNet-Lite and training the digits zoo"):
            for m in build_family("efficientnet-lite") + build_family("digits"):
                m.register_in(registry)
        settings = Settings(data_dir=data, runtimes=runtimes)
        for arch in registry.architectures():
            t0 = time.monotonic()
            with console.status(f"profiling {arch.name} (quick)"):
                asyncio.run(profile_architecture(registry, arch.name, settings, quick=True))
            console.print(f"[dim]profiled {arch.name} in {time.monotonic() - t0:.0f} s[/]")
    finally:
        registry.close()
    marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return data


# ---- what each contender sends -----------------------------------------------------------------
def sample_inputs(task: str, n: int = 8) -> np.ndarray:
    from infaas.zoo import digits, efficientnet

    if task == "imagenet-classification":
        return efficientnet.sample_images(n, seed=7)
    if task == "digits-classification":
        return digits.sample_inputs(n, seed=3)[0].astype(np.float32)
    raise ValueError(f"no sample inputs for task {task!r}: bring your own zoo into prepare()")


def binary_request(host: str, path: str, name: str, x: np.ndarray, params: dict) -> bytes:
    from infaas.tensors import NUMPY_TO_V2

    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": NUMPY_TO_V2[x.dtype],
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {**params, "binary_data_output": True},
        }
    ).encode()
    return build_request(host, path, header + x.tobytes(), [f"Inference-Header-Content-Length: {len(header)}"])


def static_plan(
    registry: Registry, apps: list[App], rates: dict[str, float], max_workers: int, kind: str
) -> tuple[int, dict[str, tuple[str, int]]]:
    """Workers and (variant, replicas) per app, sized for ``rates`` (peak or mean) by the simulator's
    static sizing (the same code sizes its static contenders)."""
    archs = {a.name: (a.task, a.accuracy) for a in registry.architectures()}
    variants = registry.variants()
    chosen = {}
    for app in apps:
        try:
            v = pinned(archs, variants, app, 1)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        chosen[app.name] = (v, registry.profile(v.name))
    workers, cores_needed, plan = sized(apps, rates, chosen, max_workers)
    console.print(
        f"[dim]{kind}: {cores_needed:.2f} cores of work at these rates -> {workers} worker(s); "
        + ", ".join(f"{a}: {n} x{r}" for a, (n, r) in plan.items())
        + "[/]"
    )
    return workers, plan


# ---- one contender -----------------------------------------------------------------------------
def run_contender(
    kind: str,
    data: Path,
    apps: list[App],
    trace: list[tuple[float, str]],
    cores: int,
    rates: dict[str, dict[str, float]],
    timeout_s: float,
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"infaas-workload-{kind}-"))
    copy = work / "data"
    shutil.copytree(data, copy)
    registry = Registry.open(copy)
    static = kind.startswith("static")
    if static:
        workers, plan = static_plan(registry, apps, rates["peak" if kind == "static-peak" else "mean"], cores, kind)
    else:
        workers, plan = 1, {}
    signatures = {a.name: a.signature for a in registry.architectures()}
    task_arch = {a.task: a.name for a in registry.architectures()}  # any one: a task has one signature
    arch_of = {v.name: v.architecture for v in registry.variants()}
    registry.close()
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "infaas.cli",
        "serve",
        "--data-dir",
        str(copy),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--cores-per-worker",
        "1",
        "--max-workers",
        str(cores),
        "--min-workers",
        "1" if not static else str(workers),
    ]
    if static:
        cmd.append("--no-autoscale")
    else:
        cmd += ["--policy", "infaas-original" if kind == "infaas-original" else "infaas"]
    log = (work / "server.log").open("w")  # noqa: SIM115 (closed in the finally below)
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=120)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{kind}: the server did not become ready (see {work / 'server.log'})")
            time.sleep(0.2)
        wanted: dict[str, int] = {}  # apps may pin the same variant: the most replicas any of them needs
        for variant, replicas in plan.values():
            wanted[variant] = max(wanted.get(variant, 0), replicas)
        for variant, replicas in wanted.items():
            r = http.post(f"/v2/repository/models/{variant}/load", json={"parameters": {"replicas": replicas}})
            r.raise_for_status()
        # requests: one per trace row, cycling through a few real inputs per app
        host = f"127.0.0.1:{port}"
        bodies: dict[str, list[bytes]] = {}
        for app in apps:
            xs = sample_inputs(app.task)
            if static:
                variant = plan[app.name][0]
                arch = arch_of[variant]
                path, params = f"/v2/models/{arch}/versions/{variant}/infer", {}
            else:
                arch = task_arch[app.task]
                path = f"/v2/models/{app.task}/infer"
                params = {k: v for k, v in app.objective.items() if v is not None}
            name = signatures[arch].inputs[0].name
            bodies[app.name] = [binary_request(host, path, name, xs[i : i + 1], params) for i in range(len(xs))]
        requests = [(t, a, bodies[a][i % len(bodies[a])]) for i, (t, a) in enumerate(trace)]
        samples: list[dict] = []
        seen: dict[tuple, dict] = {}  # decisions other than per-query selections, kept as they happen
        stop = threading.Event()

        def meter() -> None:
            with httpx.Client(base_url=url, timeout=5) as c:
                while not stop.wait(0.5):
                    try:
                        ws = c.get("/api/v1/workers").json()
                        for d in c.get("/api/v1/decisions", params={"limit": 1000}).json():
                            if d["kind"] != "select":
                                seen.setdefault((d["time"], d["kind"], d.get("variant"), d.get("worker")), d)
                    except (httpx.HTTPError, ValueError):
                        continue
                    samples.append(
                        {
                            "t": time.monotonic() - t0,
                            "cores": sum(len(w["cores"]) for w in ws if w["alive"]),
                            "workers": sum(w["alive"] for w in ws),
                            "loaded": sorted({v for w in ws for v in w["loaded"]}),
                        }
                    )

        decisions_before = time.time()
        t0 = time.monotonic()
        thread = threading.Thread(target=meter, daemon=True)
        thread.start()
        records = asyncio.run(replay(url, requests, timeout_s=timeout_s))
        wall = time.monotonic() - t0
        stop.set()
        thread.join()
        decisions = sorted((d for d in seen.values() if d["time"] >= decisions_before), key=lambda d: d["time"])
    finally:
        http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return summarize(
        kind, apps, records, samples, decisions, trace[-1][0] if trace else 0.0, wall, plan, decisions_before
    )


# ---- metrics -----------------------------------------------------------------------------------
def summarize(
    kind: str,
    apps: list[App],
    records: list,
    samples: list[dict],
    decisions: list[dict],
    duration: float,
    wall: float,
    plan: dict,
    started: float,
) -> dict:
    price = Settings().price_cpu_core_hour
    by_app = {a.name: a for a in apps}
    per_app: dict[str, dict] = {}
    errors_by_variant: dict[str, list[tuple]] = {}
    errors_by_app: dict[str, list[tuple]] = {}
    timeline = []
    for key, t_s, status, latency, doc in records:
        app = by_app[key]
        p = doc.get("parameters") or {}
        ok = status == 200
        acc = p.get("accuracy")
        late = app.latency_ms is not None and latency * 1000 > app.latency_ms
        short = app.min_accuracy is not None and (acc is None or acc < app.min_accuracy)
        violation = (not ok) or late or short
        row = per_app.setdefault(
            key,
            {
                "requests": 0,
                "violations": 0,
                "late": 0,
                "under_floor": 0,
                "failed": 0,
                "within": 0,
                "accuracy_sum": 0.0,
                "served": 0,
                "latencies": [],
            },
        )
        row["requests"] += 1
        row["violations"] += violation
        row["failed"] += not ok
        row["late"] += ok and late
        row["under_floor"] += ok and short
        row["within"] += not violation
        if ok:
            row["served"] += 1
            row["accuracy_sum"] += acc or 0.0
            row["latencies"].append(latency * 1000)
            if p.get("predicted_ms") is not None and p.get("total_ms"):
                # (predicted, actual, the app's objective): static requests name a variant and
                # carry none, but the app has one, and that is what an error is weighed against
                sample = (p["predicted_ms"], p["total_ms"], app.latency_ms)
                errors_by_variant.setdefault(p["variant"], []).append(sample)
                errors_by_app.setdefault(key, []).append(sample)
        # per request: when, app, status, client latency ms, variant, and the server's own account
        # (predicted, total, queue, compute ms, batch size) for error analysis
        timeline.append(
            (
                round(t_s, 3),
                key,
                status,
                round(latency * 1000, 2),
                p.get("variant"),
                p.get("predicted_ms"),
                p.get("total_ms"),
                p.get("queue_ms"),
                p.get("compute_ms"),
                p.get("batch_size"),
            )
        )
    apps_out = {}
    for name, r in per_app.items():
        lat = np.array(r.pop("latencies")) if r["latencies"] else np.array([np.nan])
        apps_out[name] = {
            **{k: v for k, v in r.items() if k != "accuracy_sum"},
            "violation_rate": r["violations"] / r["requests"],
            "goodput_rps": r["within"] / max(duration, 1e-9),
            "mean_accuracy": r["accuracy_sum"] / r["served"] if r["served"] else None,
            "p50_ms": float(np.nanpercentile(lat, 50)),
            "p99_ms": float(np.nanpercentile(lat, 99)),
        }
    core_s = sum(0.5 * s["cores"] for s in samples)
    actions = [d for d in decisions if d["kind"] in SCALING_KINDS]
    loads = [d for d in decisions if d["kind"] == "load"]

    prediction = {v: error_stats(e) for v, e in errors_by_variant.items()}
    every = [x for e in errors_by_variant.values() for x in e]
    overall = error_stats(every) if every else None
    total = sum(r["requests"] for r in apps_out.values())
    return {
        "contender": kind,
        "plan": plan,
        "duration_s": duration,
        "wall_s": wall,
        "requests": total,
        "violations": sum(r["violations"] for r in apps_out.values()),
        "violation_rate": sum(r["violations"] for r in apps_out.values()) / max(total, 1),
        "goodput_rps": sum(r["goodput_rps"] for r in apps_out.values()),
        "core_seconds": core_s,
        "usd": core_s / 3600 * price,
        "loads": len(loads),
        "scaling_actions": len(actions),
        "actions": [{"t": round(d["time"] - started, 1), "kind": d["kind"], "reason": d["reason"]} for d in actions],
        "apps": apps_out,
        "prediction_error": prediction,
        "prediction_by_app": {a: error_stats(e) for a, e in errors_by_app.items()},
        "prediction_overall": overall,
        "samples": samples,
        "timeline": timeline,
    }


# ---- report ------------------------------------------------------------------------------------
def error_table(r: dict) -> Table:
    """A contender's prediction error per variant (those with 20 requests or more) and per app."""
    t = Table(title=f"{r['contender']}: prediction error, relative and against the objective")
    for col in (
        "variant / app",
        "n",
        "|rel| p50",
        "|rel| p90",
        f"p90 >{SHORT_MS:g} ms",
        "median signed",
        "/obj p50",
        "/obj p90",
    ):
        t.add_column(col, justify="right" if col != "variant / app" else "left")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    variants = sorted(r["prediction_error"].items(), key=lambda kv: -kv[1]["n"])
    rows = [(v, e) for v, e in variants if e["n"] >= 20]
    rows += [(f"app {a}", e) for a, e in sorted(r.get("prediction_by_app", {}).items())]
    for name, e in [*rows, ("all requests", r["prediction_overall"])]:
        t.add_row(
            name,
            str(e["n"]),
            pct(e["p50"]),
            pct(e["p90"]),
            f"{pct(e.get('p90_long'))} ({e.get('n_long', 0)})",
            f"{e['bias']:+.1%}",
            pct(e.get("objective_p50")),
            pct(e.get("objective_p90")),
        )
    return t


def report(results: list[dict], apps: list[App], out: Path, plots: Path) -> None:
    table = Table(title="INFaaS experiment: contenders on the same cores and trace")
    for col in ("contender", "requests", "violations", "viol. %", "goodput req/s", "core-s", "USD", "loads", "scaling"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["contender"],
            str(r["requests"]),
            str(r["violations"]),
            f"{100 * r['violation_rate']:.1f}",
            f"{r['goodput_rps']:.1f}",
            f"{r['core_seconds']:.0f}",
            f"{r['usd']:.5f}",
            str(r["loads"]),
            str(r["scaling_actions"]),
        )
    console.print(table)
    per_app = Table(title="per app: violations % (late / under floor / failed), mean accuracy, p99 ms")
    per_app.add_column("app")
    for r in results:
        per_app.add_column(r["contender"])
    for app in apps:
        cells = []
        for r in results:
            a = r["apps"].get(app.name)
            if a is None:
                cells.append("-")
                continue
            acc = "-" if a["mean_accuracy"] is None else f"{a['mean_accuracy']:.3f}"
            cells.append(
                f"{100 * a['violation_rate']:.1f}% ({a['late']}/{a['under_floor']}/{a['failed']}) "
                f"acc {acc} p99 {a['p99_ms']:.0f}"
            )
        per_app.add_row(f"{app.name} ({app.objective})", *cells)
    console.print(per_app)
    for r in results:
        if r["prediction_error"]:
            console.print(error_table(r))
    ratios = target_ratios(results)
    if ratios:
        t = Table(title="infaas against each contender (same run, same trace, same cores)")
        for col in ("contender", "violations: theirs / ours", "cost: theirs / ours", "goodput: ours / theirs"):
            t.add_column(col, justify="right")
        for name, r in ratios.items():
            t.add_row(name, f"{r['violations']:.2f}x", f"{r['cost']:.2f}x", f"{r['goodput']:.2f}x")
        console.print(t)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": local_kind().as_dict(), "ratios": ratios, "results": results}, indent=1))
    console.print(f"wrote {out}")
    plot(results, apps, plots)


def target_ratios(results: list[dict]) -> dict[str, dict[str, float]]:
    """Each other contender against infaas: violations and cost as theirs / ours (above 1: infaas
    does better), goodput as ours / theirs."""
    ours = next((r for r in results if r["contender"] == "infaas"), None)
    if ours is None:
        return {}

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("inf") if a else 1.0

    return {
        r["contender"]: {
            "violations": ratio(r["violation_rate"], ours["violation_rate"]),
            "cost": ratio(r["core_seconds"], ours["core_seconds"]),
            "goodput": ratio(ours["goodput_rps"], r["goodput_rps"]),
        }
        for r in results
        if r is not ours
    }


def plot(results: list[dict], apps: list[App], prefix: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(apps), 1, figsize=(10, 2.6 * len(apps)), sharex=True)
    for ax, app in zip(np.atleast_1d(axes), apps, strict=True):
        for r in results:
            pts = [(t, ms) for t, a, status, ms, *_ in r["timeline"] if a == app.name and status == 200]
            if pts:
                t, ms = zip(*pts, strict=True)
                ax.scatter(t, ms, s=3, label=r["contender"], alpha=0.6)
        if app.latency_ms:
            ax.axhline(app.latency_ms, color="red", lw=1, ls="--", label="objective")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{app.name}: latency ({app.pattern['kind']})", fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7, markerscale=3)
    np.atleast_1d(axes)[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.2))
    edges = np.arange(0, max((r["duration_s"] for r in results), default=1) + 1, 1.0)
    trace_t = [t for t, *_ in results[0]["timeline"]] if results else []
    ax.hist(trace_t, bins=edges, color="lightgray", label="offered req/s")
    ax2 = ax.twinx()
    for r in results:
        if r["samples"]:
            ax2.step(
                [s["t"] for s in r["samples"]],
                [s["workers"] for s in r["samples"]],
                where="post",
                label=f"{r['contender']} workers",
            )
    ax.set_xlabel("s")
    ax.set_ylabel("requests/s")
    ax2.set_ylabel("workers")
    ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(f"{prefix}-load.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    names = [r["contender"] for r in results]
    for ax, key, title in zip(
        axes,
        ("violation_rate", "goodput_rps", "usd"),
        ("violations (share)", "goodput (req/s)", "cost (USD)"),
        strict=True,
    ):
        colors = {"static-peak": "#999", "static-mean": "#bbb", "infaas-original": "#79c", "infaas": "#2a7"}
        ax.bar(names, [r[key] for r in results], color=[colors.get(n, "#555") for n in names])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}-bars.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", default=str(ROOT / "bench" / "workload" / "apps.json"))
    p.add_argument("--trace", help="a t_s,app CSV (default: generated from the apps, seeded)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of generated trace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a 40-s trace: a smoke run")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="at most this many 1-core workers")
    p.add_argument("--timeout-s", type=float, default=10.0, help="the client gives up after this")
    p.add_argument("--cache", default=str(ROOT / ".cache" / "workload"))
    p.add_argument(
        "--runtimes", default="onnxruntime,openvino", help="runtimes whose variants are generated (comma-separated)"
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "workload.json"))
    p.add_argument("--plots", default=str(ROOT / "docs" / "workload"))
    args = p.parse_args()
    apps = load_apps(args.apps)
    duration = 40.0 if args.quick else args.duration
    if args.trace:
        trace = read_trace(args.trace, apps)
    else:
        trace = generate(apps, duration, args.seed)
        path = ROOT / "bench" / "workload" / "traces" / f"{Path(args.apps).stem}-{duration:g}s-seed{args.seed}.csv"
        write_trace(path, trace)
        console.print(f"[dim]trace: {len(trace)} requests over {duration:g} s -> {path}[/]")
    rates = trace_rates(trace, apps)
    data = prepare(Path(args.cache), Settings(runtimes=args.runtimes).runtimes)
    results = []
    for kind in args.contenders:
        console.rule(kind)
        results.append(run_contender(kind, data, apps, trace, args.cores, rates, args.timeout_s))
        r = results[-1]
        console.print(f"{kind}: {r['violations']} of {r['requests']} violations, {r['core_seconds']:.0f} core-s")
    report(results, apps, Path(args.out), Path(args.plots))


if __name__ == "__main__":
    main()
