"""Autoscaling under a load ramp: static provisioning (for the mean, for the peak) vs the controller.

Model: ``digits-conv`` (the digits-heavy zoo: a few thousand rows/s per core at INT8), registered
and profiled (quick) once. Load: open-loop requests of 16 rows from ``infaas.loadgen.ramp`` in
stages (low, 1.3x one replica's profiled capacity, low, idle). Each configuration gets a fresh
server on 1-core workers: static with one worker, static provisioned for the peak (a replica on
each of two workers, all the time), and autoscaled (1..2 workers, starting with one). Reported per stage: throughput, p50/p99 latency, requests over the SLO (errors count as
violations); per configuration: worker-seconds held (the cost) and the controller's actions.

    python bench/autoscale/run.py [--slo-ms 200] [--high 1.3]
Writes bench/results/autoscale.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import orjson

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from infaas.settings import Settings
from infaas.zoo import digits

ROOT = Path(__file__).resolve().parents[2]


def run(
    name: str, data: Path, workers: int, autoscale: bool, stages_x: list[tuple[float, float]], slo_ms: float
) -> dict:
    import shutil

    copy = Path(tempfile.mkdtemp()) / "d"
    shutil.copytree(data, copy)
    settings = Settings(
        data_dir=copy,
        port=0,
        workers=workers,
        cores_per_worker=1,
        max_workers=2,
        autoscale=autoscale,
        scale_down_s=5.0,
        profile_on_register=False,
    )
    server = BackgroundServer(settings).start()
    try:
        plane = server.services
        (variant,) = {n for w in plane.cluster.workers for n in w.loaded_names()}
        for worker in plane.cluster.workers:  # static provisioning: a replica on every worker
            if not worker.hosts(variant):
                asyncio.run_coroutine_threadsafe(
                    plane.placement.load(plane.catalog.variants[variant], worker), server.loop
                ).result(60)
        per_second = capacity_rps(plane.catalog.profiles[variant], 16) / 16
        stages = [(x * per_second, s) for x, s in stages_x]
        held = [0.0]
        stop = threading.Event()

        def meter() -> None:  # worker-seconds: workers alive, sampled every 100 ms
            while not stop.wait(0.1):
                held[0] += 0.1 * sum(w.alive for w in plane.cluster.workers)

        thread = threading.Thread(target=meter, daemon=True)
        thread.start()
        x, _ = digits.sample_inputs(16)
        body = orjson.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 64], "data": x.ravel().tolist()}]}
        )
        t0 = time.time()
        results = asyncio.run(
            ramp(
                server.url,
                "/v2/models/digits-conv/infer",
                body,
                ["Content-Type: application/json"],
                stages,
                slo_ms=slo_ms,
            )
        )
        stop.set()
        thread.join()
        with Client(server.url) as c:
            actions = [
                {"t": round(d["time"] - t0, 1), "kind": d["kind"], "reason": d["reason"]}
                for d in c.decisions(1000)
                if d["time"] >= t0 and d["kind"] not in ("select", "load")
            ]
        return {
            "config": name,
            "variant": variant,
            "capacity_rps": round(per_second * 16),
            "stages": results,
            "worker_seconds": round(held[0], 1),
            "actions": actions,
            "violations": sum(r["slo_violations"] for r in results),
            "requests": sum(r["requests"] + r["errors"] for r in results),
        }
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slo-ms", type=float, default=200.0)
    p.add_argument("--high", type=float, default=1.3, help="peak load as a multiple of one replica's capacity")
    args = p.parse_args()
    stages = [(0.3, 5.0), (args.high, 15.0), (0.3, 10.0), (0.0001, 12.0)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "heavy"
        print("registering and profiling digits-conv (quick) ...", flush=True)
        digits.prepare_heavy(data)
        out = [
            run("static, 1 worker", data, 1, False, stages, args.slo_ms),
            run("static, 2 workers (peak)", data, 2, False, stages, args.slo_ms),
            run("autoscaled, 1..2 workers", data, 1, True, stages, args.slo_ms),
        ]
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "autoscale.json").write_text(json.dumps(out, indent=2))
    print(f"\nSLO {args.slo_ms:g} ms; stages (x one replica's capacity, s): {stages}")
    for r in out:
        print(
            f"\n{r['config']}: {r['variant']} ({r['capacity_rps']} rows/s per replica), "
            f"{r['violations']}/{r['requests']} over the SLO, {r['worker_seconds']} worker-seconds"
        )
        for s in r["stages"]:
            print(
                f"  {s['rate']:7.1f} req/s x {s['duration_s']:>4} s: {s['throughput']:7.1f} req/s served, "
                f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, over SLO {s['slo_violations']}, errors {s['errors']}"
            )
        for a in r["actions"]:
            print(f"  t={a['t']:>5} s  {a['kind']:<13} {a['reason'][:110]}")
    one, peak, auto = out
    print(
        f"\nover the SLO: static-1 {one['violations']}, static-peak {peak['violations']}, autoscaled "
        f"{auto['violations']}; worker-seconds: {one['worker_seconds']}, {peak['worker_seconds']}, "
        f"{auto['worker_seconds']} (autoscaled/peak {auto['worker_seconds'] / peak['worker_seconds']:.2f}x)"
    )


if __name__ == "__main__":
    main()
