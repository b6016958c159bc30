"""Failover, measured: two frontends on Redis and a Ray cluster of three 1-CPU nodes, open-loop
model-less traffic to the frontend that does not lead; SIGKILL the leader, then SIGKILL the raylet of
a node that hosts a worker.

Everything runs on this machine, on 127.0.0.1: Redis (no persistence), a Ray head with no CPU and three
1-CPU raylets (``ray.cluster_utils.Cluster``, Ray's token authentication on: ``RAY_AUTH_MODE=token``
with a token made for the run), two ``infaas serve`` processes (``--cluster ray --store redis://``,
frontend A started first, so it leads; two workers, at least two). The load generator sends
``digits-classification`` requests with a latency objective to frontend B at a fixed rate, each on its
own schedule (open loop: a slow answer does not slow the sending), and records every answer.

Phases: ``steady`` (before any fault), ``leader-killed`` (from the SIGKILL of A until the raylet kill),
``node-killed`` (from the raylet kill to the end). Reported: time until B leads, time until the worker
count is back (workers ready again on the surviving nodes), per phase the share answered 200 and the
refusals (503/429, each with its reason), and requests **lost**: sent and never answered with any status
(a connection error or no answer within the client's 30 s). Lost must be zero.

    bench/cluster/failover [--rate 40] [--phase-s 15] [--out bench/results/failover.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's own token authentication, for every node and driver
if os.environ["RAY_AUTH_MODE"] == "token":
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: loopback everywhere

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from infaas.app import free_port  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.hardware import local_kind  # noqa: E402
from infaas.zoo import digits  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# Ray notices a dead node from missed health checks: every 0.5 s, three misses (default: 3 s x 5)
FAST_DEATH = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
    "health_check_timeout_ms": 500,
}
PHASES = ("steady", "leader-killed", "node-killed")


def wait_until(check, timeout_s: float, every_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return True
        except Exception:
            pass
        time.sleep(every_s)
    return False


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    args = ["--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(work)]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host=LOOPBACK, port=port)
    if not wait_until(client.ping, 15):
        sys.exit("redis-server did not start")
    return proc, f"redis://{LOOPBACK}:{port}/0"


def start_frontend(name: str, work: Path, redis_url: str, ray_address: str, namespace: str) -> tuple:
    port = free_port()
    log = (work / f"frontend-{name}.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "infaas.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(work / f"data-{name}"),
        "--cluster",
        "ray",
        "--ray-address",
        ray_address,
        "--ray-node-ip",
        LOOPBACK,
        "--node-host",
        LOOPBACK,
        "--store",
        redis_url,
        "--workers",
        "2",
        "--min-workers",
        "2",
        "--cores-per-worker",
        "1",
    ]
    env = {**os.environ, "INFAAS_RAY_NAMESPACE": namespace}
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=work)
    url = f"http://{LOOPBACK}:{port}"
    with Client(url, timeout=2) as probe:
        up = wait_until(probe.ready, 120, 0.25)
    if not up:
        proc.kill()
        sys.exit(f"frontend {name} did not start:\n{(work / f'frontend-{name}.log').read_text()[-3000:]}")
    return proc, url


def raylet_of(pid: int, cluster) -> object | None:
    """The cluster node whose raylet is an ancestor of process ``pid`` (an actor's worker process)."""
    raylets = {}
    for node in cluster.worker_nodes:
        for info in node.all_processes.get("raylet", []):
            raylets[info.process.pid] = node
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


async def open_loop(url: str, body: bytes, rate: float, stop: asyncio.Event, phase: list, out: list) -> None:
    """One request every 1/rate s to ``url`` until ``stop``; each answer (or its absence) into ``out``."""
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        tasks: set[asyncio.Task] = set()

        async def one(sent_at: float, phase_name: str) -> None:
            record = {"t": sent_at, "phase": phase_name, "status": None, "reason": ""}
            try:
                r = await client.post(url, content=body, headers={"content-type": "application/json"})
                record["status"] = r.status_code
                if r.status_code != 200:
                    record["reason"] = (r.json().get("error", "") if r.content else "")[:200]
            except Exception as exc:  # no answer at all: lost
                record["reason"] = f"{type(exc).__name__}: {exc}"[:200]
            record["latency_s"] = time.monotonic() - sent_at
            out.append(record)

        start = time.monotonic()
        i = 0
        while not stop.is_set():
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(time.monotonic(), phase[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)


def ready_workers(client: Client) -> list[dict]:
    return [w for w in client.workers() if w["state"] == "ready"]


async def scenario(args, work: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    result: dict = {"rate": args.rate, "phase_s": args.phase_s, "ray_auth_mode": os.environ["RAY_AUTH_MODE"]}
    redis_proc, redis_url = start_redis(work)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": LOOPBACK,
            "include_dashboard": False,
            "_system_config": FAST_DEATH,
        },
    )
    frontends: list[subprocess.Popen] = []
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        namespace = f"failover-{secrets.token_hex(3)}"
        fa, url_a = start_frontend("a", work, redis_url, cluster.address, namespace)
        frontends.append(fa)
        a = Client(url_a, timeout=60)
        model = next(m for m in digits.build() if m.name == "digits-mlp")
        a.register(model.name, model.task, model.onnx, validation=model.validation, max_batch=16)
        fb, url_b = start_frontend("b", work, redis_url, cluster.address, namespace)
        frontends.append(fb)
        b = Client(url_b, timeout=10)
        x, _ = digits.sample_inputs(1)
        if not wait_until(lambda: b.infer("digits-classification", x, latency_ms=200) is not None, 180, 0.5):
            raise SystemExit("frontend B never answered a query")
        if not wait_until(lambda: len(ready_workers(b)) == 2, 60):
            raise SystemExit(f"two workers never became ready: {b.workers()}")
        assert a.frontends()["leader"] and not b.frontends()["leader"], "frontend A should lead"
        meta = b.model_metadata("digits-classification")
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": meta["inputs"][0]["name"],
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": np.asarray(x, np.float32).ravel().tolist(),
                    }
                ],
                "parameters": {"latency_ms": 200},
            }
        ).encode()
        records: list[dict] = []
        phase = ["steady"]
        stop = asyncio.Event()
        loop_task = asyncio.create_task(
            open_loop(f"{url_b}/v2/models/digits-classification/infer", body, args.rate, stop, phase, records)
        )
        t0 = time.monotonic()
        await asyncio.sleep(args.phase_s)

        phase[0] = "leader-killed"  # SIGKILL the leader: the survivor must lead and serve on
        token = a.frontends()["token"]
        fa.send_signal(signal.SIGKILL)
        fa.wait(10)
        killed = time.monotonic()
        led = await asyncio.to_thread(wait_until, lambda: b.frontends()["leader"], 60, 0.05)
        result["lead_after_s"] = round(time.monotonic() - killed, 2) if led else None
        result["token"] = {"before": token, "after": b.frontends()["token"]}
        await asyncio.sleep(max(0.0, args.phase_s - (time.monotonic() - killed)))

        phase[0] = "node-killed"  # SIGKILL the raylet of a node that hosts a worker
        workers = await asyncio.to_thread(b.workers)
        # the worker that serves the traffic (hosts the variant) when there is one
        victim = max((w for w in workers if w["state"] == "ready" and w["pid"]), key=lambda w: len(w["loaded"]))
        node = raylet_of(victim["pid"], cluster)
        if node is None:
            raise SystemExit(f"no raylet found above worker {victim['name']} (pid {victim['pid']})")
        raylet = node.all_processes["raylet"][0].process
        raylet.send_signal(signal.SIGKILL)
        node_killed = time.monotonic()
        result["killed_worker"] = victim["name"]

        def back() -> bool:
            ready = ready_workers(b)
            return len(ready) == 2 and any(w["name"] == victim["name"] and w["restarts"] >= 1 for w in ready)

        came_back = await asyncio.to_thread(wait_until, back, 120, 0.1)
        result["workers_back_after_s"] = round(time.monotonic() - node_killed, 2) if came_back else None
        await asyncio.sleep(max(0.0, args.phase_s - (time.monotonic() - node_killed)))
        stop.set()
        await loop_task
        result["duration_s"] = round(time.monotonic() - t0, 1)
        result["phases"] = summarize(records)
        result["lost"] = sum(1 for r in records if r["status"] is None)
        result["sent"] = len(records)
        result["timeline"] = [[round(r["t"] - t0, 3), r["phase"], r["status"]] for r in records]
        result["decisions"] = b.decisions()[-20:]
    finally:
        for proc in frontends:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
        redis_proc.kill()
        redis_proc.wait(10)
    return result


def summarize(records: list[dict]) -> dict:
    out = {}
    for name in PHASES:
        rs = [r for r in records if r["phase"] == name]
        statuses = Counter(r["status"] for r in rs)
        reasons = Counter(r["reason"][:120] for r in rs if r["status"] not in (200, None))
        lat = sorted(r["latency_s"] for r in rs if r["status"] == 200)
        out[name] = {
            "sent": len(rs),
            "ok_share": round(statuses[200] / len(rs), 4) if rs else None,
            "statuses": {str(k): v for k, v in statuses.items()},
            "refusal_reasons": dict(reasons.most_common(5)),
            "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
            "lost": statuses[None],
        }
    return out


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"failover ({result['cpu']}, {result['rate']:g} req/s to the follower)")
    for col in ("phase", "sent", "200 share", "503/429", "lost", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for name, p in result["phases"].items():
        refused = sum(v for k, v in p["statuses"].items() if k in ("503", "429"))
        table.add_row(
            name,
            str(p["sent"]),
            f"{p['ok_share']:.1%}" if p["ok_share"] is not None else "-",
            str(refused),
            str(p["lost"]),
            str(p["p50_ms"]),
            str(p["p99_ms"]),
        )
    console = Console()
    console.print(table)
    console.print(
        f"survivor leads after {result['lead_after_s']} s; workers back after {result['workers_back_after_s']} s; "
        f"lost {result['lost']} of {result['sent']}"
    )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    end = int(max(t for t, _, _ in timeline)) + 1
    ok, refused, lost = ([0] * end for _ in range(3))
    for t, _, status in timeline:
        bucket = ok if status == 200 else lost if status is None else refused
        bucket[int(t)] += 1
    fig, ax = plt.subplots(figsize=(8, 3.2))
    xs = range(end)
    ax.bar(xs, ok, color="tab:green", label="200")
    ax.bar(xs, refused, bottom=ok, color="tab:orange", label="503/429 (with reason)")
    ax.bar(xs, lost, bottom=[o + r for o, r in zip(ok, refused, strict=True)], color="tab:red", label="lost")
    first = {p: min(t for t, ph, _ in timeline if ph == p) for p in PHASES[1:] if any(ph == p for _, ph, _ in timeline)}
    top = max(o + r + lo for o, r, lo in zip(ok, refused, lost, strict=True))
    marks = [(t, name.replace("-", " "), "--") for name, t in first.items()]
    if result.get("lead_after_s") is not None and "leader-killed" in first:
        marks.append((first["leader-killed"] + result["lead_after_s"], "follower leads", ":"))
    if result.get("workers_back_after_s") is not None and "node-killed" in first:
        marks.append((first["node-killed"] + result["workers_back_after_s"], "workers back", ":"))
    for i, (t, label, style) in enumerate(sorted(marks)):
        ax.axvline(t, color="black", linestyle=style, linewidth=1)
        ax.text(t + 0.3, top * (1.28 if i % 2 == 0 else 1.12), label, fontsize=8)
    ax.set_ylim(0, top * 1.4)
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests sent per second")
    ax.set_title(f"failover: leader SIGKILL, then a worker node's raylet SIGKILL ({result['cpu']})", fontsize=9)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=40.0, help="requests per second to the follower")
    p.add_argument("--phase-s", type=float, default=15.0, help="seconds per phase (at least)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "failover.json")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "failover.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    kind = local_kind()
    with tempfile.TemporaryDirectory(prefix="infaas-failover-") as tmp:
        result = asyncio.run(scenario(args, Path(tmp)))
    result["cpu"] = f"{kind.cpu} ({platform.machine()}, {os.cpu_count()} cores)"
    result["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    report(result)
    if not args.no_plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
