"""Variant generation + profiling of the EfficientNet-Lite family, end to end, timed.

Exports Lite0/1/2 (with preprocessing) to ONNX, registers them with their calibration images,
then generates and profiles every variant (fp32, INT8 static, INT8 dynamic, each with the recipe
search when its default recipe loses more than the bound; 1 and 2 threads; max batch 1, 4, 8, 16)
in isolated worker processes, on this machine's hardware kind. Prints each architecture's variant
table, the quantization recipe that won (speed-up over fp32, accuracy with its interval), every
recipe tried, and how long it took; writes bench/results/profile.json.

    python bench/profile/run.py [--quick] [--only efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from rich.table import Table  # noqa: E402

from infaas.cli.tables import variants_table  # noqa: E402
from infaas.hardware import local_kind  # noqa: E402
from infaas.profiler import profile_architecture  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.zoo import efficientnet  # noqa: E402

console = Console()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer runs per batch size (the 5-minute budget)")
    p.add_argument("--only", nargs="+", choices=list(efficientnet.ARCHITECTURES))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "profile.json"))
    args = p.parse_args()
    names = args.only or list(efficientnet.ARCHITECTURES)

    work = Path(tempfile.mkdtemp(prefix="infaas-profile-"))
    settings = Settings(data_dir=work)
    registry = Registry.open(work)
    t0 = time.monotonic()
    with console.status("exporting to ONNX"):
        models = efficientnet.build(names)
        for m in models:
            m.register_in(registry)
    export_s = time.monotonic() - t0
    results = {}
    with Progress(console=console) as progress:
        for name in names:
            bar = progress.add_task(name, total=None)

            def update(what, done, total, bar=bar, name=name):
                progress.update(bar, description=f"{name}: {what}", completed=done, total=total or None)

            report = asyncio.run(profile_architecture(registry, name, settings, quick=args.quick, progress=update))
            results[name] = report
    total_s = time.monotonic() - t0

    kind = local_kind()
    out = {
        "quick": args.quick,
        "export_s": round(export_s, 1),
        "total_s": round(total_s, 1),
        "hardware": kind.as_dict(),
        "architectures": {},
    }
    console.print(f"hardware kind: [bold]{kind.id}[/] — {kind.describe()}")
    summary = Table(title="INT8 against fp32, 2 threads, max batch 16 (rows/s at the best batch)")
    for col in (
        "architecture",
        "recipe",
        "fp32 rows/s",
        "int8 rows/s",
        "speed-up",
        "accuracy [95 %]",
        "loss bound",
        "status",
    ):
        summary.add_column(col)
    for name, report in results.items():
        rows = [
            {
                **v.model_dump(mode="json"),
                "loaded_on": [],
                "profile": report.profiles[v.name].model_dump(mode="json") if v.name in report.profiles else None,
            }
            for v in report.variants
        ]
        console.print(variants_table(rows, f"{name}: generated and profiled in {report.seconds:.0f} s"))
        for s in report.skipped:
            console.print(f"[dim]{s.format} skipped: {s.reason}[/]")
        for v in report.variants:
            if v.status != "ready":
                console.print(f"[dim]{v.name} {v.status}: {v.reason}[/]")
        for fmt, log in report.searches.items():
            console.print(f"[dim]{name} {fmt}: recipes tried[/]")
            for t in log:
                console.print(
                    f"   {t['recipe']}: {t['verdict']}"
                    + (f", {t['throughput']:.0f} rows/s" if t.get("throughput") else "")
                )
        top = max(v.max_batch for v in report.variants)
        threads = max(v.threads for v in report.variants)
        pick = {v.format: v for v in report.variants if v.max_batch == top and v.threads == threads}
        fp32, int8 = pick.get("onnx-fp32"), pick.get("onnx-int8-static")
        if fp32 is not None and int8 is not None and int8.name in report.profiles:
            p32, p8 = report.profiles[fp32.name], report.profiles[int8.name]
            acc = "-" if p8.accuracy is None else f"{p8.accuracy:.3f} [{p8.accuracy_low:.3f}, {p8.accuracy_high:.3f}]"
            summary.add_row(
                name,
                int8.params.get("recipe_text", "-"),
                f"{p32.throughput:.0f}",
                f"{p8.throughput:.0f}",
                f"{p8.throughput / p32.throughput:.2f}x",
                acc,
                "-" if p8.loss_high is None else f"{p8.loss_high:.4f} (n={p8.samples})",
                int8.status,
            )
        out["architectures"][name] = {
            "seconds": round(report.seconds, 1),
            "variants": rows,
            "searches": report.searches,
            "skipped": {s.format: s.reason for s in report.skipped},
        }
    console.print(summary)
    console.print(
        f"[bold]export {export_s:.0f} s + generation and profiling → total {total_s:.0f} s "
        f"({'quick' if args.quick else 'full'})[/]"
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {path}")
    registry.close()


if __name__ == "__main__":
    main()
