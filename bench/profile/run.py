"""Variant generation + profiling of the EfficientNet-Lite family, end to end, timed.

Exports Lite0/1/2 (with preprocessing) to ONNX, registers them with their calibration images,
then generates and profiles every variant (fp32, INT8 static u8/s8, INT8 dynamic; 1 and 2 threads;
max batch 1, 4, 8, 16) in isolated worker processes. Prints each architecture's variant table and
how long generation + profiling took; writes bench/results/profile.json.

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

from infaas.cli import variants_table  # noqa: E402
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
            registry.register(m.name, m.task, m.onnx, accuracy=m.accuracy, calibration=m.calibration,
                              max_batch=m.max_batch, description=m.description)  # fmt: skip
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

    out = {"quick": args.quick, "export_s": round(export_s, 1), "total_s": round(total_s, 1), "architectures": {}}
    for name, report in results.items():
        rows = [{**v.model_dump(mode="json"), "loaded_on": [],
                 "profile": report.profiles[v.name].model_dump(mode="json") if v.name in report.profiles else None}
                for v in report.variants]  # fmt: skip
        console.print(variants_table(rows, f"{name}: generated and profiled in {report.seconds:.0f} s"))
        for s in report.skipped:
            console.print(f"[dim]{s.format} skipped: {s.reason}[/]")
        for v in report.variants:
            if v.status != "ready":
                console.print(f"[dim]{v.name} {v.status}: {v.reason}[/]")
        out["architectures"][name] = {"seconds": round(report.seconds, 1), "variants": rows,
                                      "skipped": {s.format: s.reason for s in report.skipped}}  # fmt: skip
    console.print(f"[bold]export {export_s:.0f} s + generation and profiling → total {total_s:.0f} s "
                  f"({'quick' if args.quick else 'full'})[/]")  # fmt: skip
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {path}")
    registry.close()


if __name__ == "__main__":
    main()
