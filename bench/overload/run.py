"""Overload: goodput, deadlines and recovery of one 1-core worker under open-loop load past capacity.

Model: ``digits-conv`` (the digits-heavy zoo), registered and profiled (quick) once. The server runs
as its own process (``infaas serve``: one worker on one core, autoscaling off), so its memory and
file descriptors are measured apart from the load generator. Capacity is measured first, closed
loop (requests of 16 rows from 16 clients). Then open-loop stages at 0.7x, 2x, 3x and 0.5x of it:

- ``admission``: infaas as shipped: requests without an objective (deadline: the server's default,
  ``--deadline-s``), shed at admission when they cannot make it;
- ``objective``: the same with ``latency_ms`` (``--latency-ms``) in every request;
- ``fifo``: admission control off (``INFAAS_ADMISSION_CONTROL=false``): every request is queued and
  dropped only when its deadline passes in the queue.

Clients give up at their deadline (plus 0.5 s), as real callers with a timeout do; more runs use
**patient** clients, which wait for every answer however long (tritonclient's default), with the
door's shedding on (as shipped) and off (``max_loop_lag_ms`` and ``max_inflight_requests`` out of
reach: the server before issue 26), each with JSON bodies and with binary ones (``--encodings``).
Beside each stage's client p99, the p99 of the server's own account (``server_ms``, from the door).
Goodput is the rate of answers with status 200 that arrived
within the deadline, as the clients see it, counted by the request's arrival time. ``--soak S`` adds a run of S
seconds at 1.5x capacity sampling the server's and the worker's RSS and open file descriptors.

    python bench/overload/run.py [--deadline-s 1] [--latency-ms 250] [--soak 600] [--only patient] [--channels 32]
                                 [--encodings json binary]
``--channels`` sets digits-conv's width: 256 (the default) makes the worker the bottleneck at tens of
requests a second; 32 makes each request cheap, so hundreds a second also load the frontend (and the
load generator beside it), the case where refusing a request must cost little.
Writes bench/results/overload.json and docs/img/overload.png (``-c32`` in both names for
``--channels 32``), and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from infaas.app import free_port
from infaas.loadgen import ramp
from infaas.loadgen import run as closed_loop
from infaas.zoo import digits

ROOT = Path(__file__).resolve().parents[2]
PATH = "/v2/models/digits-conv/infer"
STAGES = [(0.7, 6.0), (2.0, 8.0), (3.0, 8.0), (0.5, 8.0)]  # (x capacity, seconds)


def body(**params) -> bytes:
    x, _ = digits.sample_inputs(16)
    req = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 64], "data": x.ravel().tolist()}]}
    if params:
        req["parameters"] = params
    return orjson.dumps(req)


def encoded(encoding: str, params: dict) -> tuple[bytes, list[str]]:
    """The request body and headers: JSON ``data``, or the binary tensor extension (tritonclient's default)."""
    if encoding == "json":
        return body(**params), ["Content-Type: application/json"]
    x, _ = digits.sample_inputs(16)
    raw = x.astype("float32").tobytes()
    req: dict = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [16, 64], "parameters": {"binary_data_size": len(raw)}}
        ]
    }
    if params:
        req["parameters"] = params
    js = orjson.dumps(req)
    return js + raw, ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {len(js)}"]


class Server:
    """``infaas serve`` in its own process on a copy of the prepared data directory."""

    def __init__(self, data: Path, deadline_s: float, admission: bool, env: dict | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp())
        shutil.copytree(data, self.dir / "d")
        self.port = free_port()
        env = {**os.environ, "INFAAS_ADMISSION_CONTROL": "true" if admission else "false", **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infaas.cli",
                "serve",
                "--data-dir",
                str(self.dir / "d"),
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--cores-per-worker",
                "1",
                "--no-autoscale",
                "--default-timeout-s",
                str(deadline_s),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")

    def pids(self) -> dict[str, int]:
        workers = httpx.get(self.url + "/api/v1/workers", timeout=10).json()
        return {"server": self.proc.pid, **{f"worker {w['name']}": w["pid"] for w in workers}}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_capacity(data: Path, seconds: float = 6.0) -> float:
    """Requests of 16 rows per second one worker serves, closed loop (deadline long enough to shed nothing)."""
    server = Server(data, 60.0, True)
    try:
        out = asyncio.run(closed_loop(server.url, PATH, body(), ["Content-Type: application/json"], 16, seconds, 2.0))
        return out["throughput"]
    finally:
        server.stop()


# the door's limits out of reach: the server as it was before it shed at the door (issue 26)
DOOR_OFF = {
    "INFAAS_MAX_LOOP_LAG_MS": "1000000000",
    "INFAAS_MAX_INFLIGHT_REQUESTS": "1000000000",
    "INFAAS_DOOR_THROTTLE": "false",
}


def run_config(
    name: str,
    data: Path,
    capacity: float,
    deadline_s: float,
    admission: bool,
    params: dict,
    patient: bool = False,
    env: dict | None = None,
    encoding: str = "json",
) -> dict:
    """One configuration through the stages. ``patient`` clients wait for their answer however long it
    takes (tritonclient's default); the others give up at the deadline plus 0.5 s. Each answer's
    ``server_ms`` (the server's own account, from the door) is kept beside what the client saw."""
    server = Server(data, deadline_s, admission, env)
    payload, headers = encoded(encoding, params)
    try:
        stages = [(x * capacity, s) for x, s in STAGES]
        records: list[tuple[int, float, int, float]] = []
        reported: list[tuple[int, float, float, str]] = []
        asyncio.run(
            ramp(
                server.url,
                PATH,
                payload,
                headers,
                stages,
                max_connections=1024,
                records=records,
                timeout_s=None if patient else deadline_s + 0.5,
                reported=reported,
            )
        )
    finally:
        server.stop()
    out = summarize(name, records, stages, capacity, deadline_s)
    for i, row in enumerate(out["stages"]):
        errors = [r[3] for r in reported if r[0] == i and r[3]]
        row["refused_by"] = dict(Counter(refused_by(e) for e in errors).most_common())
        row["other_errors"] = sorted({e[:200] for e in errors if refused_by(e) == "other"})[:3]
        server_ms = sorted(r[2] for r in reported if r[0] == i and not r[3])
        row["server_p99_ms"] = round(server_ms[int(0.99 * (len(server_ms) - 1))], 1) if server_ms else None
        if row["server_p99_ms"] and row["p99_ms"]:
            row["server_over_client_p99"] = round(row["server_p99_ms"] / row["p99_ms"], 3)
    out["encoding"] = encoding
    return out


# who refused a request, from the words of its error (serving/door.py, worker/batcher.py, the worker)
_REFUSERS = [
    ("the most they take", "door: throttle"),
    ("requests in flight through its", "door: in flight"),
    ("event loop", "door: loop lag"),
    ("its body was not read", "door: expired"),
    ("standing queue", "worker: standing queue"),
    ("rows queued ahead", "worker: deadline"),
    ("past its bound", "worker: queue bound"),
    ("could not meet its deadline", "worker: dropped late"),
]


def refused_by(error: str) -> str:
    return next((who for words, who in _REFUSERS if words in error), "other")


def summarize(name: str, records: list, stages: list, capacity: float, deadline_s: float) -> dict:
    rows = []
    t = 0.0
    for i, ((rate, seconds), (x, _)) in enumerate(zip(stages, STAGES, strict=True)):
        mine = [r for r in records if r[0] == i]
        good = [r for r in mine if r[2] == 200 and r[3] <= deadline_s]
        served = [r[3] for r in mine if r[2] == 200]
        codes: dict[str, int] = {}
        for r in mine:
            codes[str(r[2])] = codes.get(str(r[2]), 0) + 1
        first_ok = None  # recovery (the last stage): from its start, the time after which every request succeeds
        if i == len(stages) - 1 and mine:
            bad = [r[1] for r in mine if r[2] != 200 or r[3] > deadline_s]
            first_ok = round(max(bad) - t, 2) if bad else 0.0
        rows.append(
            {
                "x": x,
                "offered_rps": round(rate, 1),
                "seconds": seconds,
                "sent": len(mine),
                "goodput_rps": round(len(good) / seconds, 1),
                "goodput_x_capacity": round(len(good) / seconds / capacity, 3),
                "p50_ms": round(statistics.median(served) * 1000, 1) if served else None,
                "p99_ms": round(sorted(served)[int(0.99 * (len(served) - 1))] * 1000, 1) if served else None,
                "codes": codes,
                "all_ok_after_s": first_ok,
            }
        )
        t += seconds
    return {
        "config": name,
        "deadline_s": deadline_s,
        "stages": rows,
        "timeline": [(round(r[1], 3), r[2], round(r[3], 4)) for r in records],
    }


def soak(data: Path, capacity: float, seconds: float, deadline_s: float) -> dict:
    server = Server(data, deadline_s, True)
    samples: list[dict] = []
    try:
        pids = server.pids()

        def sample() -> dict:
            out = {"t": time.monotonic()}
            for name, pid in pids.items():
                with open(f"/proc/{pid}/statm") as f:
                    out[f"{name} rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
                out[f"{name} fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            return out

        async def main() -> list[dict]:
            load = asyncio.ensure_future(
                ramp(
                    server.url,
                    PATH,
                    body(),
                    ["Content-Type: application/json"],
                    [(1.5 * capacity, seconds)],
                    max_connections=1024,
                    timeout_s=deadline_s + 0.5,
                )
            )
            while not load.done():
                samples.append(await asyncio.to_thread(sample))
                await asyncio.sleep(5.0)
            return await load

        result = asyncio.run(main())
    finally:
        server.stop()
    t0 = samples[0]["t"]
    minute = [s for s in samples if 10 <= s["t"] - t0 <= 70] or samples[:1]  # after the connections opened
    last = [s for s in samples if samples[-1]["t"] - s["t"] <= 60] or samples[-1:]
    keys = [k for k in samples[0] if k != "t"]
    growth = {
        k: round(statistics.mean(s[k] for s in last) / max(1e-9, statistics.mean(s[k] for s in minute)), 3)
        for k in keys
    }
    return {
        "seconds": seconds,
        "offered_rps": round(1.5 * capacity, 1),
        "result": result,
        "last_minute_over_first": growth,
        "samples": samples,
    }


def plot(results: list[dict], capacity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), sharex=True)
    edges = [0.0]
    for _, s in STAGES:
        edges.append(edges[-1] + s)
    for ax, res in zip(axes, results, strict=True):
        bins = [0.5 * i for i in range(int(edges[-1] / 0.5) + 1)]
        good = [0] * len(bins)
        shed = [0] * len(bins)
        late = [0] * len(bins)
        for t, status, took in res["timeline"]:
            b = min(len(bins) - 1, int(t / 0.5))
            if status == 200 and took <= res["deadline_s"]:
                good[b] += 2
            elif status == 429:
                shed[b] += 2
            else:
                late[b] += 2
        ax.plot(bins, good, label="served within the deadline (by arrival time)", color="tab:green")
        ax.plot(bins, shed, label="shed at admission (429)", color="tab:orange")
        ax.plot(bins, late, label="late, dropped or timed out", color="tab:red")
        offered = [x * capacity for x, s in STAGES for _ in range(int(s / 0.5))]
        ax.step(bins[: len(offered)], offered, where="post", color="grey", linestyle=":", label="offered load")
        ax.axhline(capacity, color="black", linewidth=0.6, label="capacity")
        ax.set_ylabel("req/s")
        ax.set_title(res["config"], fontsize=9)
        for e in edges[1:-1]:
            ax.axvline(e, color="grey", linewidth=0.4)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("seconds (stages: " + ", ".join(f"{x}x" for x, _ in STAGES) + " capacity)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--deadline-s", type=float, default=1.0, help="the server's default deadline (no objective)")
    p.add_argument("--latency-ms", type=float, default=250.0, help="latency objective of the 'objective' run")
    p.add_argument("--soak", type=float, default=0.0, help="seconds of the 1.5x soak (0: none)")
    p.add_argument("--only", choices=["all", "patient", "impatient"], default="all", help="which client kinds to run")
    p.add_argument(
        "--channels",
        type=int,
        default=256,
        help="digits-conv's width: 256 makes the worker the bottleneck; a narrow one (32) leaves it to the frontend",
    )
    p.add_argument(
        "--encodings", nargs="+", choices=["json", "binary"], default=["json", "binary"], help="patient runs' bodies"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "heavy"
        print(f"registering and profiling digits-conv of {args.channels} channels (quick) ...", flush=True)
        digits.register_and_profile(data, [digits.heavy(channels=args.channels)])
        capacity = measure_capacity(data)
        print(f"capacity (closed loop, 16 clients, requests of 16 rows): {capacity:.1f} req/s", flush=True)
        results = []
        if args.only in ("all", "impatient"):
            results += [
                run_config("admission (no objective)", data, capacity, args.deadline_s, True, {}),
                run_config(
                    f"admission, latency_ms {args.latency_ms:g}",
                    data,
                    capacity,
                    args.latency_ms / 1000,
                    True,
                    {"latency_ms": args.latency_ms},
                ),
                run_config("fifo: admission off (no objective)", data, capacity, args.deadline_s, False, {}),
            ]
        if args.only in ("all", "patient"):  # clients that wait for their answer, with and without the door
            for enc in args.encodings:
                results += [
                    run_config(
                        f"patient clients, {enc}, door on",
                        data,
                        capacity,
                        args.deadline_s,
                        True,
                        {},
                        patient=True,
                        encoding=enc,
                    ),
                    run_config(
                        f"patient clients, {enc}, door off",
                        data,
                        capacity,
                        args.deadline_s,
                        True,
                        {},
                        patient=True,
                        env=DOOR_OFF,
                        encoding=enc,
                    ),
                ]
        soaked = soak(data, capacity, args.soak, args.deadline_s) if args.soak else None
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "" if args.channels == 256 else f"-c{args.channels}"
    (out_dir / f"overload{tag}.json").write_text(
        json.dumps({"capacity_rps": capacity, "channels": args.channels, "runs": results, "soak": soaked}, indent=1)
    )
    plot(results, capacity, ROOT / "docs" / "img" / f"overload{tag}.png")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    print(f"\nCPU: {model}; capacity {capacity:.1f} req/s of 16 rows")
    print(
        f"{'config':<36} {'stage':>5} {'offered':>8} {'goodput':>8} {'x cap':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv p99':>8} {'ok after':>8}  codes"
    )
    for r in results:
        for s in r["stages"]:
            print(
                f"{r['config']:<36} {s['x']:>4}x {s['offered_rps']:>8} {s['goodput_rps']:>8} "
                f"{s['goodput_x_capacity']:>6} {s['p50_ms']!s:>8} {s['p99_ms']!s:>8} {s.get('server_p99_ms')!s:>8} "
                f"{s['all_ok_after_s']!s:>8}  {s['codes']} {s.get('refused_by') or ''}"
            )
    if soaked:
        print(
            f"\nsoak {soaked['seconds']:g} s at {soaked['offered_rps']} req/s: last minute / first minute: "
            f"{soaked['last_minute_over_first']}"
        )
        print(f"soak result: {soaked['result']}")


if __name__ == "__main__":
    main()
