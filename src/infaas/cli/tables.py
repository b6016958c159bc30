"""What the CLI prints: rich tables (models, variants with their profiles) or JSON (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console()


def show(args, data: Any, title: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    """``--json``: the data as JSON; otherwise a rich table of the given rows."""
    if args.json:
        print_json(data)
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def accuracy_cell(v: dict) -> str:
    return "-" if v["accuracy"] is None else f"{v['accuracy']:.3f} ({v['accuracy_source']})"


def status_cell(v: dict) -> str:
    return f"loaded on {', '.join(v['loaded_on'])}" if v["loaded_on"] else v["status"]


def num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def quality_cell(v: dict, p: dict) -> str:
    """Accuracy (in the task's metric) with its 95 % interval and provenance letter, e.g. 0.748 [0.741,0.751] e."""
    if v["accuracy"] is None:
        return "-"
    text = f"{v['accuracy']:.3f}"
    low, high = p.get("accuracy_low"), p.get("accuracy_high")
    if low is not None and high is not None and high - low > 5e-4:
        text += f" [{low:.3f},{high:.3f}]"
    return f"{text} {v['accuracy_source'][0]}"


def variants_table(variants: list[dict], title: str) -> Table:
    """Profiles side by side (accuracy provenance as one letter); the caption names the hardware
    kind(s) and metric the profiles were measured with."""
    from rich import box

    kinds = sorted({(v.get("profile") or {}).get("hardware") for v in variants} - {None})
    metrics = sorted({(v.get("profile") or {}).get("metric") for v in variants} - {None})
    caption = (
        "p50 in ms at batch 1 / at max batch; memory in MB; load in ms; quality"
        f"{' (' + ', '.join(metrics) + ')' if metrics else ''} with its 95 % interval: m measured, "
        "d declared, e estimated, r reference; µ$/1k: micro-dollars per 1000 inferences"
        + (f"\nhardware kind: {', '.join(kinds)}" if kinds else "")
    )
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, caption=caption
    )
    for col in ("variant", "runtime", "status", "p50@1/max", "rows/s", "MB", "load", "quality", "n", "µ$/1k"):
        table.add_column(col, justify="left" if col in ("variant", "runtime", "status") else "right", no_wrap=True)
    for v in sorted(variants, key=lambda v: (v["format"], v["threads"], v["max_batch"])):
        p = v.get("profile") or {}
        lat = p.get("latency_p50_ms") or {}
        top = str(max((int(b) for b in lat), default=0))
        label = f"{v['format'].removeprefix('onnx-')} t{v['threads']} b{v['max_batch']}"
        status = "loaded" if v.get("loaded_on") else v["status"]
        table.add_row(
            label,
            v.get("runtime") or "onnxruntime",
            status,
            f"{num(lat.get('1'))}/{num(lat.get(top))}" if lat else "-",
            num(p.get("throughput"), ".0f"),
            num(p.get("peak_memory_mb"), ".0f"),
            num(p.get("load_time_ms"), ".0f"),
            quality_cell(v, p),
            str(p.get("samples") or "-"),
            num(p["cost_per_1k"] * 1e6 if p.get("cost_per_1k") else None, ".3g"),
        )
    return table


def print_variants(variants: list[dict], title: str) -> None:
    console.print(variants_table(variants, title))
    shown = set()
    for v in sorted(variants, key=lambda v: (v["architecture"], v["parent"] is not None, -v["threads"])):
        p = v.get("profile") or {}
        if p.get("axis_latency_ms") and v["architecture"] not in shown:  # one line per architecture, its fp32
            shown.add(v["architecture"])
            points = ", ".join(
                f"{k}: {float(ms):.3g}" for k, ms in sorted(p["axis_latency_ms"].items(), key=lambda kv: int(kv[0]))
            )
            console.print(f"[dim]{v['name']} p50@1 in ms over {p['axis']}:[/] {points}")
    for v in sorted(variants, key=lambda v: (v["architecture"], v["format"])):
        key = (v["architecture"], v["format"])
        if key in shown or "recipe_text" not in v["params"]:
            continue
        shown.add(key)
        tried = [t for t in v["params"].get("search", []) if "params" in t]
        console.print(
            f"[dim]{v['architecture']} {v['format'].removeprefix('onnx-')} recipe:[/] "
            f"{v['params']['recipe_text']}" + (f" (searched {len(tried)} recipes)" if len(tried) > 1 else "")
        )
        if len(tried) > 1:
            for t in v["params"]["search"]:
                console.print(
                    f"   [dim]{t['recipe']}:[/] {t['verdict']}"
                    + (f", {t['throughput']:.0f} rows/s" if t.get("throughput") else "")
                )
    for v in sorted(variants, key=lambda v: (v["format"], v["threads"], v["max_batch"])):
        if v["status"] in ("rejected", "failed"):
            label = f"{v['format'].removeprefix('onnx-')} t{v['threads']} b{v['max_batch']}"
            console.print(f"[dim]{label} {v['status']}:[/] {v['reason']}")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=jsonable) + "\n")


def jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    raise TypeError(type(obj).__name__)
