"""What each INT8 recipe loses on another CPU's integer kernels, without that CPU.

ONNX Runtime picks its integer GEMM kernels by CPUID: on AVX-512 VNNI (and AVX-VNNI, AMX) a
U8S8 dot product accumulates exactly; on AVX2 without VNNI the U8S8 kernel adds pairs of
uint8 x int8 products in int16 first (``vpmaddubsw``), which can saturate, so the same
quantized graph can answer differently. Timings cannot be emulated, answers can: QEMU's user-mode
emulator runs a Python process under a CPU model that reports (and executes) only that CPU's
instruction set, so ONNX Runtime takes that CPU's kernels.

For one architecture of the EfficientNet-Lite family this script makes the INT8 static artifact
of the default recipe and of every search step (``infaas.variants.SEARCH_STEPS``) with the
generator's own ``Quantizer``, then answers the profiler's evaluation inputs (the calibration
data past the rows the quantizer calibrated on) with fp32 and each artifact, natively and under
emulation, and judges each recipe as the profiler does (expected top-1 loss against fp32 on the
same CPU, one-sided 95 % bound, ``max_accuracy_drop``). Then the search's last step, mixed
precision: the generator's per-node sensitivity pass ranks the default recipe's node groups on
the emulated CPU (its quantized graph runs fused, on that CPU's kernels), and the most sensitive
groups (``--exclude``) stay in fp32. Needs ``qemu-x86_64`` (Debian's
``qemu-user``). Writes ``bench/results/isa.json``.

    python bench/profile/isa.py [--arch efficientnet-lite0] [--cpu EPYC-Rome] [--rows 256]

Speed on the emulated CPU is *not* measured (emulation is 10-100x slower and not proportional);
only which recipes keep their accuracy there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def child(manifest: Path, out: Path) -> None:
    """Runs on the CPU asked for: answer ``inputs`` with every model of the manifest (raw outputs),
    or, with ``sensitivity``, rank the quantizer's node groups by the error they add there."""
    spec = json.loads(manifest.read_text())
    if "sensitivity" in spec:
        from infaas.registry import Registry
        from infaas.variants.artifact import Artifact
        from infaas.variants.quantize import Quantizer

        registry = Registry.open(Path(spec["data_dir"]))
        with Quantizer(registry, registry.architecture(spec["arch"])) as qz:
            ranking = qz.sensitivity("onnx-int8-static", Artifact("onnx-int8-static", spec["sensitivity"], "", {}))
        out.write_text(json.dumps(ranking))
        return
    import onnxruntime as ort

    feeds = dict(np.load(spec["inputs"]))
    n = len(next(iter(feeds.values())))
    results = {}
    for key, path in spec["models"].items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        chunks = [session.run(names, {k: v[i : i + 16] for k, v in feeds.items()}) for i in range(0, n, 16)]
        for j, name in enumerate(names):
            results[f"{key}|{name}"] = np.concatenate([c[j] for c in chunks])
    np.savez(out, **results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="efficientnet-lite0")
    p.add_argument("--cpu", default="EPYC-Rome", help="a QEMU CPU model (qemu-x86_64 -cpu help)")
    p.add_argument("--rows", type=int, default=256, help="evaluation inputs answered under emulation")
    p.add_argument("--exclude", type=int, nargs="+", default=[4, 8, 16], help="mixed precision: groups kept in fp32")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "isa.json"))
    p.add_argument("--child", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return

    from rich.console import Console
    from rich.table import Table

    from infaas.hardware import local_kind
    from infaas.profiler import quality as Q
    from infaas.profiler.measure import evaluation_data
    from infaas.registry import Registry
    from infaas.settings import Settings
    from infaas.variants.quantize import DEFAULT_RECIPES, SEARCH_STEPS, Quantizer, describe_recipe
    from infaas.worker.measure import answers
    from infaas.zoo import efficientnet

    console = Console()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        sys.exit("qemu-x86_64 not found: apt-get install qemu-user")
    work = Path(tempfile.mkdtemp(prefix="infaas-isa-"))
    settings = Settings(data_dir=work)
    registry = Registry.open(work)
    with console.status(f"exporting {args.arch}"):
        (m,) = efficientnet.build([args.arch])
        registry.register(
            m.name,
            m.task,
            m.onnx,
            accuracy=m.accuracy,
            calibration=m.calibration,
            max_batch=m.max_batch,
            description=m.description,
        )
    arch = registry.architecture(args.arch)
    data = evaluation_data(registry, arch, args.rows)
    rows = len(next(iter(data.inputs.values())))
    fmt = "onnx-int8-static"
    recipes = [dict(DEFAULT_RECIPES[fmt])] + [{**DEFAULT_RECIPES[fmt], **step} for step in SEARCH_STEPS[fmt]]
    np.savez(work / "inputs.npz", **data.inputs)
    places = {"native": [], args.cpu: [qemu, "-cpu", args.cpu]}
    timings: dict[str, float] = {}

    def on(where: str, spec: dict, out: Path) -> Path:
        manifest = work / "manifest.json"
        manifest.write_text(json.dumps(spec))
        t0 = time.monotonic()
        with open(work / "child.log", "a") as log:
            done = subprocess.run(
                [*places[where], sys.executable, __file__, "--child", str(manifest), str(out)], stdout=log, stderr=log
            )
        if done.returncode:
            sys.exit(f"the {where} run failed: see {work / 'child.log'}")
        timings[where] = timings.get(where, 0.0) + time.monotonic() - t0
        return out

    def answer(where: str, models: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
        with console.status(f"answering {rows} inputs with {len(models)} models ({where})"):
            raw = np.load(on(where, {"inputs": str(work / "inputs.npz"), "models": models}, work / "out.npz"))
        return {key: {k.split("|", 1)[1]: raw[k] for k in raw.files if k.split("|", 1)[0] == key} for key in models}

    made = {}
    with Quantizer(registry, arch, progress=lambda msg: console.print(f"[dim]{msg}[/]")) as qz:
        for recipe in recipes:
            made[describe_recipe(recipe)] = qz.quantize(fmt, recipe)
    models = {"fp32": str(registry.models.path(arch.model_hash))}
    models |= {text: str(registry.models.path(a.key)) for text, a in made.items()}
    outputs = {where: answer(where, models) for where in places}

    # mixed precision as the search does it, with the emulated CPU's sensitivity ranking of the default recipe
    default = made[describe_recipe(recipes[0])]
    rankings = {}
    for where in (args.cpu,):
        with console.status(f"per-node sensitivity of the default recipe ({where})"):
            spec = {"data_dir": str(work), "arch": args.arch, "sensitivity": default.key}
            rankings[where] = json.loads(on(where, spec, work / "ranking.json").read_text())
        console.print(
            f"{where}: most sensitive " + ", ".join(f"{'+'.join(g)} (+{e:.3f})" for g, e in rankings[where][:4])
        )
        mixed = {}
        with Quantizer(registry, arch) as qz:
            for k in args.exclude:
                recipe = {**recipes[0], "exclude": [n for g, _ in rankings[where][:k] for n in g]}
                mixed[describe_recipe(recipe) + f" ({where} ranking)"] = str(
                    registry.models.path(qz.quantize(fmt, recipe).key)
                )
        for place in places:
            outputs[place] |= answer(place, mixed)
        models |= mixed

    probe = (
        "from numpy._core._multiarray_umath import __cpu_features__ as f; print(' '.join(k for k, v in f.items() if v))"
    )
    seen = subprocess.run([qemu, "-cpu", args.cpu, sys.executable, "-c", probe], capture_output=True, text=True)
    flags = [f for f in seen.stdout.split() if f.startswith("AVX") or "VNNI" in f]  # what CPUID reports there
    console.print(f"emulated {args.cpu}: CPUID reports {' '.join(flags)}")
    table = Table(
        title=f"{args.arch}: INT8 static recipes, expected top-1 loss against fp32 on the same CPU "
        f"(n={rows}, bound {settings.max_accuracy_drop})"
    )
    table.add_column("recipe")
    for where in outputs:
        table.add_column(f"{where}: agreement")
        table.add_column(f"{where}: loss [95 % bound]")
    result = {
        "arch": args.arch,
        "rows": rows,
        "bound": settings.max_accuracy_drop,
        "native": local_kind().as_dict(),
        "emulated": args.cpu,
        "emulated_flags": flags,
        "seconds": timings,
        "recipes": [],
    }
    for key in models:
        if key == "fp32":
            continue
        row = {"recipe": key}
        cells = [key]
        for where, outs in outputs.items():
            parent = answers(outs["fp32"], arch.signature, "top1")
            mine = answers(outs[key], arch.signature, "top1")
            parent_top = None if parent["top_classes"] is None else (parent["top_classes"], parent["top_probs"])
            q = Q.top1_estimated(mine["predictions"], parent_top, parent["predictions"], arch.accuracy)
            keep = q.within(settings.max_accuracy_drop)
            row[where] = {"agreement": q.agreement, "loss": q.loss, "loss_high": q.loss_high, "meets_bound": keep}
            cells += [f"{q.agreement:.3f}", f"[{'green' if keep else 'red'}]{q.loss:.4f} [{q.loss_high:.4f}][/]"]
        table.add_row(*cells)
        result["recipes"].append(row)
    result["sensitivity"] = {where: r[:16] for where, r in rankings.items()}
    console.print(table)
    console.print(f"native {timings['native']:.0f} s, emulated {args.cpu} {timings[args.cpu]:.0f} s")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path}")
    registry.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
