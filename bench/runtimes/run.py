"""Runtimes side by side: ONNX Runtime, OpenVINO and PyTorch variants of the same models, profiled on this CPU.

Registers EfficientNet-Lite0/1/2 (exported locally from the [zoo] extra's weights, with their
calibration images and PyTorch programs) and the text zoo's two-layer sentence encoder (distilled
locally; quality is cosine fidelity to fp32), lets the profiler generate and judge every variant of every installed runtime
(``Settings.runtimes``), then prints, per architecture at the most threads and the largest max batch,
each format side by side: rows/s at the best batch, p50 at batch 1, memory, load time, quality with
its 95 % interval, verdict, and throughput as a ratio to ORT fp32. It also times OpenVINO's compile
cache (a load with an empty cache, then with the blob the first load left) and asks the model-less
selection which variant it picks for "within 1 point of fp32's top-1, any latency". Writes
bench/results/runtimes.json.

    python bench/runtimes/run.py [--quick] [--only efficientnet-lite0 text-encoder-l2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from infaas.hardware import local_kind  # noqa: E402
from infaas.policy import Objective, Option, select  # noqa: E402
from infaas.profiler import profile_architecture  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.registry.types import runtime_of  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.worker.runtime import make_runtime  # noqa: E402
from infaas.zoo import efficientnet, text  # noqa: E402

MODELS = [*efficientnet.ARCHITECTURES, "text-encoder-l2"]

console = Console(width=150)


def cache_saving(registry: Registry, variant, work: Path, rounds: int = 3) -> dict:
    """Load time of an OpenVINO variant with an empty compile cache, then with the blob it left (medians)."""
    path = registry.models.path(variant.artifact_hash)
    cold, warm = [], []
    for i in range(rounds):
        cache = work / f"ov-cache-{variant.format}-{i}"
        for into in (cold, warm):
            rt = make_runtime(path, variant.format, threads=variant.threads, cache_dir=cache)
            rt.load()
            into.append(rt.load_time_s * 1000)
            rt.unload()
    return {"cold_ms": statistics.median(cold), "cached_ms": statistics.median(warm)}


def side_by_side(name: str, report, registry: Registry, work: Path) -> tuple[Table, dict]:
    top = max(v.max_batch for v in report.variants)
    threads = max(v.threads for v in report.variants)
    pick = {v.format: v for v in report.variants if v.max_batch == top and v.threads == threads}
    base = report.profiles.get(pick["onnx-fp32"].name) if "onnx-fp32" in pick else None
    table = Table(title=f"{name}: {threads} threads, max batch {top}")
    for col in ("format", "runtime", "rows/s", "vs ORT fp32", "p50@1 ms", "MB", "load ms", "quality [95 %]", "verdict"):
        table.add_column(col, justify="left" if col in ("format", "runtime", "verdict") else "right")
    rows = {}
    for fmt, v in sorted(pick.items(), key=lambda kv: (runtime_of(kv[0])[0] != "onnxruntime", kv[0])):
        p = report.profiles.get(v.name)
        if p is None:
            table.add_row(fmt, runtime_of(fmt)[0], "-", "-", "-", "-", "-", "-", f"{v.status}: {v.reason[:60]}")
            continue
        ratio = p.throughput / base.throughput if base else None
        acc = "-" if p.accuracy is None else f"{p.accuracy:.3f} [{p.accuracy_low:.3f}, {p.accuracy_high:.3f}]"
        p50 = p.latency_p50_ms.get(1)
        table.add_row(
            fmt,
            runtime_of(fmt)[0],
            f"{p.throughput:.0f}",
            "-" if ratio is None else f"{ratio:.2f}x",
            "-" if p50 is None else f"{p50:.2f}",
            f"{p.peak_memory_mb:.0f}",
            f"{p.load_time_ms:.0f}",
            acc,
            v.status if v.status == "ready" else f"{v.status}: {v.reason[:60]}",
        )
        rows[fmt] = {
            "variant": v.name,
            "runtime": runtime_of(fmt)[0],
            "rows_per_s": p.throughput,
            "vs_ort_fp32": ratio,
            "p50_batch1_ms": p50,
            "memory_mb": p.peak_memory_mb,
            "load_ms": p.load_time_ms,
            "accuracy": [p.accuracy, p.accuracy_low, p.accuracy_high],
            "status": v.status,
            "reason": v.reason,
        }
    ov = pick.get("ov-fp32")
    cache = cache_saving(registry, ov, work) if ov is not None else None
    # the model-less choice: within a point of fp32's declared top-1, no latency asked
    floor = (pick["onnx-fp32"].accuracy or 0) - 0.01 if "onnx-fp32" in pick else None
    options = [Option(v, report.profiles[v.name], ()) for v in report.variants if v.name in report.profiles]
    choice = select(Objective(min_accuracy=floor), options, 1, f"architecture {name}")
    return table, {"rows": rows, "compile_cache": cache, "choice": choice.variant.name, "reason": choice.reason}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer runs per batch size")
    p.add_argument("--only", nargs="+", choices=MODELS)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "runtimes.json"))
    args = p.parse_args()
    names = args.only or MODELS
    work = Path(tempfile.mkdtemp(prefix="infaas-runtimes-"))
    settings = Settings(data_dir=work)
    registry = Registry.open(work)
    kind = local_kind()
    t0 = time.monotonic()
    with console.status("exporting to ONNX and torch.export (training the encoder)"):
        lite = [n for n in names if n in efficientnet.ARCHITECTURES]
        encoders = [n for n in names if n in text.ARCHITECTURES]
        for m in (efficientnet.build(lite) if lite else []) + (text.build(encoders) if encoders else []):
            m.register_in(registry)
    out = {"quick": args.quick, "hardware": kind.as_dict(), "runtimes": settings.runtimes, "architectures": {}}
    with Progress(console=console) as progress:
        reports = {}
        for name in names:
            bar = progress.add_task(name, total=None)

            def update(what, done, total, bar=bar, name=name):
                progress.update(bar, description=f"{name}: {what}", completed=done, total=total or None)

            reports[name] = asyncio.run(
                profile_architecture(registry, name, settings, quick=args.quick, progress=update)
            )
    console.print(f"hardware kind: [bold]{kind.id}[/] — {kind.describe()}")
    for name, report in reports.items():
        table, summary = side_by_side(name, report, registry, work)
        console.print(table)
        for s in report.skipped:
            console.print(f"[dim]{s.format} skipped: {s.reason}[/]")
        if summary["compile_cache"]:
            c = summary["compile_cache"]
            console.print(
                f"OpenVINO compile cache (ov-fp32): load {c['cold_ms']:.0f} ms empty, {c['cached_ms']:.0f} ms cached"
            )
        console.print(f"model-less choice: [bold]{summary['choice']}[/] — {summary['reason']}")
        out["architectures"][name] = {**summary, "seconds": round(report.seconds, 1)}
    out["total_s"] = round(time.monotonic() - t0, 1)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    console.print(f"{out['total_s']:.0f} s in all; wrote {path}")
    registry.close()


if __name__ == "__main__":
    main()
