"""Overhead benchmark: raw in-process ONNX Runtime vs infaas over REST (binary tensors).

One run, same machine, same cores, same model (EfficientNet-Lite0 fp32 with its preprocessing,
input UINT8 [n, 256, 256, 3]):
- raw: in-process ORT at batch 1, 2, 4, 8, 16, as one session of all threads (spinning off and
  on) and as one single-threaded session per core; the best of all is the reference;
- infaas: `infaas serve` (one worker on the same cores, max batch 16; one runtime instance of all
  threads, and one single-threaded instance per core) in its own process, driven by the
  closed-loop load generator (bench/loadgen.py) in another process, one image per request, at
  1, 8 and 32 concurrent clients.
Rounds alternate raw and infaas; medians over rounds are reported, with the ratio to raw.
Writes bench/results/overhead.json (and a PNG plot when matplotlib is installed).

    python bench/overhead/run.py [--rounds 3] [--duration 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from infaas.frontend.server import free_port  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.zoo import efficientnet  # noqa: E402

console = Console()
MODEL = "efficientnet-lite0"


def raw_throughput(model_path: Path, sessions: int, threads: int, batch: int, duration: float,
                   spinning: bool) -> float:  # fmt: skip
    """Images/s of ``sessions`` ORT sessions of ``threads`` threads each, run back to back in threads."""
    import threading

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    runs = [ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    x = efficientnet.sample_images(batch, seed=batch)
    for sess in runs:
        sess.run(None, {"image": x})
    counts = [0] * sessions
    stop = time.perf_counter() + duration

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            runs[i].run(None, {"image": x})
            counts[i] += batch

    t0 = time.perf_counter()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def start_server(data_dir: Path, port: int, threads: int, instances: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFAAS_INSTANCES_PER_VARIANT": str(instances)}
    proc = subprocess.Popen([sys.executable, "-m", "infaas.cli", "serve", "--port", str(port),
                             "--data-dir", str(data_dir), "--workers", "1", "--cores-per-worker", str(threads)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server failed: {proc.stderr.read().decode()}")
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def binary_request(image: np.ndarray) -> tuple[bytes, str]:
    header = orjson.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(image.shape),
                                       "parameters": {"binary_data_size": image.nbytes}}],
                           "parameters": {"binary_data_output": True}})  # fmt: skip
    return header + image.tobytes(), str(len(header))


def load(port: int, body_file: Path, header_len: str, concurrency: int, duration: float, warmup: float) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", f"http://127.0.0.1:{port}",
                          "--path", f"/v2/models/{MODEL}/infer", "--body", str(body_file),
                          "--header", f"Inference-Header-Content-Length: {header_len}",
                          "-c", str(concurrency), "-d", str(duration), "--warmup", str(warmup)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--quick", action="store_true", help="1 round of 4 s (smoke run)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "overhead.json"))
    args = p.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 4.0

    work = Path(tempfile.mkdtemp(prefix="infaas-bench-"))
    with console.status("exporting EfficientNet-Lite0 (with preprocessing) to ONNX"):
        zm = efficientnet.build([MODEL])[0]
        for instances in (1, args.threads):
            registry = Registry.open(work / f"data-{instances}")
            registry.register(zm.name, zm.task, zm.onnx, accuracy=zm.accuracy, max_batch=16,
                              threads=max(1, args.threads // instances))  # fmt: skip
            model_path = registry.models.path(registry.architecture(MODEL).model_hash)
            registry.close()
    body, header_len = binary_request(efficientnet.sample_images(1))
    (work / "req.bin").write_bytes(body)

    # raw layouts: one session with all threads (spinning off / on, ORT's default), or one
    # single-threaded session per core; infaas layouts: one instance, or one instance per core
    raw_layouts = [(1, args.threads, False), (1, args.threads, True)]
    if args.threads > 1:
        raw_layouts.append((args.threads, 1, False))
    layouts = [1, args.threads] if args.threads > 1 else [1]
    raw_runs: dict[str, list[float]] = {}
    served_runs: dict[str, list[dict]] = {}
    port = free_port()
    for rnd in range(args.rounds):
        console.print(f"[bold]round {rnd + 1}/{args.rounds}[/]")
        for batch in (1, 2, 4, 8, 16):
            for sessions, threads, spinning in raw_layouts:
                key = f"{sessions}x{threads}t b{batch}{' spin' if spinning else ''}"
                tput = raw_throughput(model_path, sessions, threads, batch, args.duration / 2.5, spinning)
                raw_runs.setdefault(key, []).append(tput)
                console.print(f"  raw ORT {key:14s}: {tput:6.1f} img/s")
        for instances in layouts:
            server = start_server(work / f"data-{instances}", port, args.threads, instances)
            try:
                for c in args.concurrency:
                    r = load(port, work / "req.bin", header_len, c, args.duration, warmup=2.0)
                    served_runs.setdefault(f"{instances}x{args.threads // instances}t|{c}", []).append(r)
                    console.print(f"  infaas {instances}x{args.threads // instances}t {c:2d} clients: "
                                  f"{r['throughput']:6.1f} img/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                                  f"errors {r['errors']}")  # fmt: skip
            finally:
                server.terminate()
                server.wait(timeout=30)

    raw = {k: statistics.median(v) for k, v in raw_runs.items()}
    best_key = max(raw, key=raw.get)
    best = raw[best_key]
    table = Table(title=f"EfficientNet-Lite0 fp32 on {args.threads} cores: infaas over REST (binary) vs the best "
                        f"raw ONNX Runtime layout ({best_key}: {best:.1f} img/s); medians of {args.rounds} rounds")  # fmt: skip
    for col in ("infaas layout", "clients", "img/s", "x raw best", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    rows = []
    for key, runs in served_runs.items():
        layout, c = key.split("|")
        tput = statistics.median(r["throughput"] for r in runs)
        row = {"layout": layout, "clients": int(c), "throughput": round(tput, 1), "ratio_to_raw": round(tput / best, 3),
               "p50_ms": statistics.median(r["p50_ms"] for r in runs),
               "p99_ms": statistics.median(r["p99_ms"] for r in runs),
               "errors": sum(r["errors"] for r in runs)}  # fmt: skip
        rows.append(row)
        table.add_row(layout, c, f"{tput:.1f}", f"{tput / best:.2f}", f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}",
                      str(row["errors"]))  # fmt: skip
    console.print(table)
    result = {"model": MODEL, "threads": args.threads, "rounds": args.rounds, "duration_s": args.duration,
              "cpus": os.cpu_count(), "raw_img_per_s": {k: round(v, 1) for k, v in raw.items()},
              "raw_best": {"config": best_key, "img_per_s": round(best, 1)}, "infaas": rows,
              "raw_runs": raw_runs, "infaas_runs": {str(k): v for k, v in served_runs.items()}}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")
    _plot(result, out.with_suffix(".png"))


def _plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for layout in sorted({r["layout"] for r in result["infaas"]}):
        rows = [r for r in result["infaas"] if r["layout"] == layout]
        ax.plot([r["clients"] for r in rows], [r["throughput"] for r in rows], "o-", label=f"infaas {layout}")
    ax.axhline(result["raw_best"]["img_per_s"], color="grey", ls="--",
               label=f"raw ORT ({result['raw_best']['config']})")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images / s")
    ax.set_title("EfficientNet-Lite0: infaas vs raw ONNX Runtime")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
