"""Local backend vs Ray backend: the same closed-loop load, the same cores, the same model and variant.

Contenders (each a fresh infaas server in this process, the load generator in its own process):
  local-1w   one local worker process, 1 core            | ray-1node   one Ray node (1 CPU), one actor
  local-2w   two local worker processes, 1 core each     | ray-2nodes  two Ray nodes (1 CPU each), an actor on each
The Ray contenders run on ``ray.cluster_utils.Cluster`` (a head with no CPU + 1 or 2 raylets on this machine).
The variant is loaded on every worker; queries name it (no selection), so only the backend differs.

Reported per contender and client count: throughput, p50, p99 (median over rounds), ratios Ray / local,
added p50 at one client; and the cost of a control call (a ``ping`` through the worker handle: a frame on
the local socketpair, a Ray actor call for the Ray backend, whose requests travel on their own TCP
connection to the actor instead; median of 300). JSON in bench/results/cluster.json, a plot in
docs/img/cluster.png.

    bench/cluster/run [--rounds 3] [--duration 6] [--clients 1 8] [--model digits-mlp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: loopback, not the interface address

from infaas.app import BackgroundServer  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.tensors import NUMPY_TO_V2  # noqa: E402
from infaas.zoo import digits  # noqa: E402

console = Console()
CONTENDERS = {"local-1w": ("local", 1), "ray-1node": ("ray", 1), "local-2w": ("local", 2), "ray-2nodes": ("ray", 2)}
PAIRS = (("ray-1node", "local-1w"), ("ray-2nodes", "local-2w"))


def prepare(work: Path, model: str) -> tuple[Path, str, bytes, str]:
    data = work / "data"
    registry = Registry.open(data)
    m = next(m for m in digits.build() if m.name == model)
    _, variant = registry.register(m.name, m.task, m.onnx, accuracy=0.9, max_batch=16, threads=1)
    registry.close()
    x = digits.sample_inputs(n=1)[0][:1].astype("float32")
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": NUMPY_TO_V2[x.dtype],
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return data, variant.name, header + x.tobytes(), f"Inference-Header-Content-Length: {len(header)}"


def load(url: str, path: str, body: Path, header: str, clients: int, duration: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "infaas.loadgen",
        "--url",
        url,
        "--path",
        path,
        "--body",
        str(body),
        "--header",
        header,
        "-c",
        str(clients),
        "-d",
        str(duration),
        "--warmup",
        "1",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )
    return json.loads(out.stdout)


def hop_us(server: BackgroundServer, n: int = 300) -> float:
    """Median round trip of a control ``ping`` through the first worker's handle (frontend -> worker ->
    frontend): a socketpair frame locally, a Ray actor call on the Ray backend."""
    worker = server.services.cluster.workers[0]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        asyncio.run_coroutine_threadsafe(worker._call({"op": "ping"}), server.loop).result(10)
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def run_contender(name: str, data: Path, variant: str, body: Path, header: str, args, rnd: int) -> dict:
    backend, workers = CONTENDERS[name]
    cluster = None
    overrides: dict = {}
    if backend == "ray":
        import ray
        from ray.cluster_utils import Cluster

        loopback = "127.0.0.1"  # every node, listener and driver on loopback
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": loopback},
        )
        for _ in range(workers):
            cluster.add_node(num_cpus=1, node_ip_address=loopback)
        cluster.wait_for_nodes()
        overrides = {
            "cluster": "ray",
            "ray_address": cluster.address,
            "ray_namespace": f"bench-{name}-{rnd}",
            "ray_node_ip": loopback,
        }
    settings = Settings(
        data_dir=data,
        port=0,
        workers=workers,
        cores_per_worker=1,
        autoscale=False,
        profile_on_register=False,
        **overrides,
    )
    out: dict = {"runs": {}}
    try:
        with BackgroundServer(settings) as server:
            with Client(server.url) as c:
                c.load_model(variant, workers)
                arch = variant.split(".", 1)[0]
                path = f"/v2/models/{arch}/versions/{variant}/infer"
                for clients in args.clients:
                    out["runs"][clients] = load(server.url, path, body, header, clients, args.duration)
            out["hop_us"] = hop_us(server)
            out["nodes"] = sorted(
                {getattr(w.transport, "node_id", "local")[:8] for w in server.services.cluster.workers}
            )
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--model", default="digits-mlp")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cluster.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "cluster.png"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="infaas-cluster-"))
    data, variant, body_bytes, header = prepare(work, args.model)
    body = work / "req.bin"
    body.write_bytes(body_bytes)
    results: dict[str, list[dict]] = {n: [] for n in CONTENDERS}
    for rnd in range(args.rounds):
        order = list(CONTENDERS) if rnd % 2 == 0 else list(reversed(CONTENDERS))
        for name in order:
            console.print(f"round {rnd + 1}/{args.rounds}: {name}")
            results[name].append(run_contender(name, data, variant, body, header, args, rnd))

    def med(name: str, clients: int, key: str) -> float:
        return statistics.median(r["runs"][clients][key] for r in results[name])

    summary: dict = {
        "model": args.model,
        "variant": variant,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "cpu": _cpu(),
        "contenders": {},
    }
    table = Table(title=f"{args.model}: local backend vs Ray backend (median of {args.rounds} rounds)")
    for col in ("contender", "clients", "req/s", "p50 ms", "p99 ms", "control call µs"):
        table.add_column(col, justify="right")
    for name in CONTENDERS:
        hop = statistics.median(r["hop_us"] for r in results[name])
        summary["contenders"][name] = {"hop_us": hop, "nodes": results[name][0]["nodes"], "clients": {}}
        for clients in args.clients:
            row = {k: med(name, clients, k) for k in ("throughput", "p50_ms", "p99_ms")}
            summary["contenders"][name]["clients"][clients] = row
            table.add_row(
                name,
                str(clients),
                f"{row['throughput']:.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{hop:.0f}",
            )
    console.print(table)
    ratios = Table(title="Ray / local (targets: throughput >= 0.8x, added p50 < 1 ms)")
    for col in ("pair", "clients", "throughput ratio", "added p50 ms", "added p99 ms", "control call added µs"):
        ratios.add_column(col, justify="right")
    summary["ratios"] = {}
    for ray_name, local_name in PAIRS:
        r, loc = summary["contenders"][ray_name], summary["contenders"][local_name]
        for clients in args.clients:
            rr, ll = r["clients"][clients], loc["clients"][clients]
            entry = {
                "throughput": rr["throughput"] / ll["throughput"],
                "added_p50_ms": rr["p50_ms"] - ll["p50_ms"],
                "added_p99_ms": rr["p99_ms"] - ll["p99_ms"],
                "added_hop_us": r["hop_us"] - loc["hop_us"],
            }
            summary["ratios"][f"{ray_name}/{local_name}@{clients}"] = entry
            ratios.add_row(
                f"{ray_name} / {local_name}",
                str(clients),
                f"{entry['throughput']:.2f}x",
                f"{entry['added_p50_ms']:+.2f}",
                f"{entry['added_p99_ms']:+.2f}",
                f"{entry['added_hop_us']:+.0f}",
            )
    console.print(ratios)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rounds": results}, indent=1))
    _plot(summary, args.clients, Path(args.plot))
    console.print(f"wrote {args.out} and {args.plot}")


def _cpu() -> str:
    from infaas.hardware import local_kind

    return local_kind().describe()


def _plot(summary: dict, clients: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CONTENDERS)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(clients)
    for i, c in enumerate(clients):
        xs = [j + i * width for j in range(len(names))]
        axes[0].bar(
            xs, [summary["contenders"][n]["clients"][c]["throughput"] for n in names], width, label=f"{c} clients"
        )
        axes[1].bar(xs, [summary["contenders"][n]["clients"][c]["p50_ms"] for n in names], width, label=f"{c} clients")
    for ax, title in zip(axes, ("throughput (req/s)", "p50 latency (ms)"), strict=True):
        ax.set_xticks([j + width * (len(clients) - 1) / 2 for j in range(len(names))], names, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary['model']}: local worker processes vs Ray actors, same cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
