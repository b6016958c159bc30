"""``infaas demo``: an embedded server, the digits zoo, and a stream of queries at all three levels."""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from infaas.app import BackgroundServer
from infaas.client import Client, InfaasClientError
from infaas.policy.scaling import SCALING_KINDS
from infaas.settings import Settings
from infaas.zoo import digits

console = Console()

# (query level, model name asked, version)
QUERIES = [
    ("1 variant", "digits-tree", "loaded"),
    ("2 arch", "digits-nb", None),
    ("2 arch", "digits-logreg", None),
    ("3 task", "digits-classification", None),
]


def run_demo(queries: int = 300, concurrency: int = 8, workers: int = 1, scaling: bool = True) -> None:
    with tempfile.TemporaryDirectory(prefix="infaas-demo-") as data_dir:
        settings = Settings(data_dir=data_dir, port=0, workers=workers)
        with console.status("starting an embedded infaas server"):
            server = BackgroundServer(settings).start()
        try:
            console.print(f"[bold]infaas[/] up at {server.url} (data dir {data_dir})")
            _run(server.url, queries, concurrency)
        finally:
            with console.status("stopping"):
                server.stop()
    if scaling:
        _scaling()


def _watch_workers(cluster, name: str, short: str, done, t0: float) -> None:
    """A live status line (workers, replicas of ``name``) until the load is over and the extra
    worker is gone again (at most 60 s)."""
    with console.status("") as status:
        while not done.is_set() or (len(cluster.workers) > 1 and time.time() - t0 < 60):
            workers = cluster.workers
            status.update(
                f"t={time.time() - t0:4.1f} s  workers {len(workers)}  replicas of {short}: "
                f"{sum(w.hosts(name) for w in workers)}  "
                f"{'(load running)' if not done.is_set() else '(load over)'}"
            )
            time.sleep(0.2)


def _controller_table(decisions: list[dict], t0: float) -> None:
    """The controller's scaling decisions since ``t0``, each with its reason."""
    table = Table(title="what the controller did (infaas decisions)")
    table.add_column("t (s)", justify="right")
    table.add_column("action")
    table.add_column("why")
    kinds = (*SCALING_KINDS, "blocked")
    for d in decisions:
        if d["time"] >= t0 and d["kind"] in kinds:
            table.add_row(f"{d['time'] - t0:.1f}", d["kind"], d["reason"])
    console.print(table)


def _scaling() -> None:
    """Part 2: a load ramp on a deliberately heavy model; the controller adds a worker and a
    replica, then takes them away once the load is gone."""
    import asyncio
    import threading

    import orjson

    from infaas.loadgen import ramp
    from infaas.policy.autoscale import capacity_rps

    console.rule("autoscaling")
    with tempfile.TemporaryDirectory(prefix="infaas-demo-") as data_dir:
        settings = Settings(data_dir=data_dir, port=0, workers=1, cores_per_worker=1, max_workers=2, scale_down_s=3.0)
        server = BackgroundServer(settings).start()
        try:
            with Client(server.url) as client:
                with console.status("building digits-conv (a deliberately slow model for the digits task)"):
                    model = digits.heavy()
                client.register(
                    model.name,
                    model.task,
                    model.onnx,
                    validation=model.validation,
                    calibration=model.calibration,
                    description=model.description,
                )
                from infaas.cli.models import wait_for_profiles as _wait_for_profiles

                _wait_for_profiles(client, [model.name], quick=True)
                plane = server.services
                name = next(n for w in plane.cluster.workers for n in w.loaded_names())
                per_second = capacity_rps(plane.catalog.profiles[name], plane.catalog.variants[name].max_batch) / 16
                x, _ = digits.sample_inputs(16)
                body = orjson.dumps(
                    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 64], "data": x.ravel().tolist()}]}
                )
                stages = [(0.3 * per_second, 3.0), (1.3 * per_second, 10.0), (0.2 * per_second, 4.0)]
                console.print(
                    f"one 1-core worker serves {name} at ~{per_second * 16:.0f} rows/s; sending "
                    f"16-row requests at 0.3x, then 1.3x that, then 0.2x (open loop)"
                )
                t0 = time.time()
                done = threading.Event()
                summary: list = []

                def load() -> None:
                    summary.extend(
                        asyncio.run(
                            ramp(
                                server.url,
                                f"/v2/models/{model.name}/infer",
                                body,
                                ["Content-Type: application/json"],
                                stages,
                            )
                        )
                    )
                    done.set()

                threading.Thread(target=load, daemon=True).start()
                _watch_workers(plane.cluster, name, name.removeprefix(model.name + "."), done, t0)
                for s in summary:
                    console.print(
                        f"  {s['rate']:6.0f} req/s for {s['duration_s']:g} s: p50 {s['p50_ms']} ms, "
                        f"p99 {s['p99_ms']} ms, errors {s['errors']}"
                    )
                _controller_table(client.decisions(1000), t0)
        finally:
            with console.status("stopping"):
                server.stop()


def _report(results: dict[tuple[str, str], list], queries: int, elapsed: float) -> None:
    """What ran for each level: the variants, rows right, p50/p99, mean batch, and why."""
    table = Table(title=f"what ran ({queries} queries in {elapsed:.1f} s, {queries / elapsed:.0f} queries/s)")
    table.add_column("asked for (level)", min_width=21)
    table.add_column("variant that ran", min_width=16)
    for col in ("rows right", "p50/p99 ms", "batch"):
        table.add_column(col, no_wrap=True, justify="right")
    for (level, model), rs in sorted(results.items()):
        ok = [r for r in rs if r[2] is not None]
        lat = sorted(r[4] * 1000 for r in ok) or [float("nan")]
        variants = sorted({(r[2]["architecture"], r[2]["variant"]) for r in ok})
        ran = "\n".join(f"{arch}\n[dim].{name.removeprefix(arch + '.')}[/]" for arch, name in variants)
        rows = sum(r[5] for r in ok)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        table.add_row(
            f"{model}\n[dim]{level}, {len(ok)}/{len(rs)} ok[/]",
            ran,
            f"{sum(r[6] for r in ok)}/{rows}",
            f"{statistics.median(lat):.1f}/{p99:.1f}",
            f"{statistics.mean(r[2]['batch_size'] for r in ok):.1f}" if ok else "-",
        )
    console.print(table)
    for (_level, model), rs in sorted(results.items()):
        ok = [r for r in rs if r[2] is not None]
        if ok:
            console.print(f"[bold]{model}[/] → why: {ok[0][2]['reason']}")
        for r in rs:
            if r[3]:
                console.print(f"[red]{model}: {r[3]}[/]")
                break


def _run(url: str, queries: int, concurrency: int) -> None:
    with Client(url) as client:
        with console.status("training the digits zoo (scikit-learn, a few seconds)"):
            models = digits.build()
        with Progress(console=console) as progress:
            task = progress.add_task("registering (accuracy measured on held-out digits)", total=len(models))
            for m in models:
                client.register(m.name, m.task, m.onnx, validation=m.validation, description=m.description)
                progress.advance(task)
        from infaas.cli.models import wait_for_profiles as _wait_for_profiles

        console.print("generating and profiling the variants of each architecture (quick):")
        _wait_for_profiles(client, [m.name for m in models], quick=True)
        variants = client.variants()
        table = Table(title="architectures of task digits-classification and their variants")
        for col in ("architecture", "accuracy", "ready", "rejected"):
            table.add_column(col)
        table.add_column("loaded", no_wrap=True)
        loaded = {}
        for arch in client.architectures():
            mine = [v for v in variants if v["architecture"] == arch["name"]]
            loaded[arch["name"]] = next((v["name"] for v in mine if v["loaded_on"]), "-")
            table.add_row(
                arch["name"],
                f"{arch['accuracy']:.3f} ({arch['accuracy_source']})",
                str(sum(v["status"] == "ready" for v in mine)),
                str(sum(v["status"] == "rejected" for v in mine)),
                loaded[arch["name"]].removeprefix(arch["name"] + "."),
            )
        console.print(table)
        console.print("(every variant, with latency, throughput, memory, cost and why rejected: infaas variants ARCH)")

    x_val, y_val = digits.sample_inputs(n=400)
    rng = np.random.default_rng(0)
    plan = []
    for i in range(queries):
        level, model, version = QUERIES[i % len(QUERIES)]
        rows = int(rng.integers(1, 9))
        start = int(rng.integers(0, len(x_val) - rows))
        plan.append((level, model, loaded[model] if version == "loaded" else version, start, rows))

    results: dict[tuple[str, str], list] = {}
    clients = [Client(url) for _ in range(concurrency)]

    def one(i: int):
        level, model, version, start, rows = plan[i]
        c = clients[i % concurrency]
        t0 = time.perf_counter()
        try:
            r = c.infer(model, x_val[start : start + rows], version=version)
        except InfaasClientError as exc:
            return level, model, None, exc.message, time.perf_counter() - t0, rows, 0
        correct = int((r.outputs["label"] == y_val[start : start + rows]).sum())
        return level, model, r.parameters, None, time.perf_counter() - t0, rows, correct

    t_start = time.perf_counter()
    with Progress(console=console) as progress, ThreadPoolExecutor(concurrency) as pool:
        bar = progress.add_task(f"{queries} queries, {concurrency} concurrent clients", total=queries)
        for res in pool.map(one, range(queries)):
            results.setdefault((res[0], res[1]), []).append(res)
            progress.advance(bar)
    elapsed = time.perf_counter() - t_start
    for c in clients:
        c.close()

    _report(results, queries, elapsed)
