"""Commands about models: register, zoo, models, variants, profile (with progress until the
profiles are in)."""

from __future__ import annotations

import time

from rich.progress import Progress

from infaas.cli.common import client_for, err
from infaas.cli.tables import accuracy_cell, console, print_json, print_variants, show, status_cell
from infaas.client import Client
from infaas.registry.types import runtime_of
from infaas.settings import load_settings


def _profile_local(data_dir: str, names: list[str], quick: bool) -> None:
    """Generate and profile variants in this process (no server), with progress bars."""
    import asyncio

    from infaas.profiler import profile_architecture
    from infaas.registry import Registry

    settings = load_settings(data_dir=data_dir)
    registry = Registry.open(data_dir)
    try:
        with Progress(console=err) as progress:
            for name in names:
                bar = progress.add_task(f"{name}: generating", total=None)

                def update(what: str, done: int, total: int, bar=bar, name=name) -> None:
                    progress.update(bar, description=f"{name}: {what}", completed=done, total=total or None)

                report = asyncio.run(profile_architecture(registry, name, settings, quick=quick, progress=update))
                progress.update(bar, description=f"{name}: profiled in {report.seconds:.0f} s")
    finally:
        registry.close()


def wait_for_profiles(client: Client, names: list[str], quick: bool) -> None:
    """Start (or join) server-side profiling and follow it with progress bars."""
    states = {name: client.profile(name, quick=quick) for name in names}
    with Progress(console=err) as progress:
        bars = {name: progress.add_task(f"{name}: {states[name]['stage']}", total=None) for name in names}
        while True:
            for name in names:
                st = states[name] = client.profiling(name)
                progress.update(
                    bars[name], description=f"{name}: {st['stage']}", completed=st["done"], total=st["total"] or None
                )
            if all(st["finished"] is not None for st in states.values()):
                break
            time.sleep(0.3)
    for name, st in states.items():
        if st["error"]:
            err.print(f"[red]profiling {name} failed[/] {st['error']}")


def _register_items(args, items: list[dict]) -> list[dict]:
    """Register through the server (default) or straight into a data directory (--data-dir); then
    generate and profile the variants unless --no-wait."""
    quick = getattr(args, "quick", False)
    if args.data_dir:
        from infaas.registry import Registry

        registry = Registry.open(args.data_dir)
        try:
            out = []
            for item in items:
                arch, variant = registry.register(**item)
                out.append(
                    {"architecture": arch.model_dump(mode="json"), "variants": [variant.model_dump(mode="json")]}
                )
        finally:
            registry.close()
        if not args.no_wait:
            _profile_local(args.data_dir, [r["architecture"]["name"] for r in out], quick)
        return out
    with client_for(args) as client:
        out = []
        for item in items:
            item = dict(item)
            out.append(client.register(item.pop("name"), item.pop("task"), item.pop("model"), **item))
        if not args.no_wait:
            wait_for_profiles(client, [r["architecture"]["name"] for r in out], quick)
        return out


def _show_registered(args, results: list[dict]) -> None:
    rows = ((r["architecture"]["name"], r["architecture"]["task"], accuracy_cell(r["architecture"])) for r in results)
    show(args, results, "registered", ("architecture", "task", "accuracy"), rows)
    if not args.json:
        console.print("variants, profiles and reasons: [bold]infaas variants ARCH[/]")


def cmd_register(args) -> None:
    item = {
        "name": args.name,
        "task": args.task,
        "model": args.model,
        "accuracy": args.accuracy,
        "validation": args.validation,
        "calibration": args.calibration,
        "description": args.description or "",
    }
    if args.program:
        item["program"] = args.program
    if args.metric:
        item["metric"] = args.metric
    if args.max_batch:
        item["max_batch"] = args.max_batch
    _show_registered(args, _register_items(args, [item]))


def cmd_zoo(args) -> None:
    from infaas.zoo import FAMILIES, build_family

    if args.action == "list":
        for name in FAMILIES:
            console.print(name)
        return
    with console.status(f"building zoo family {args.family} (locally, nothing is downloaded)"):
        models = build_family(args.family)
    items = [
        {
            "name": m.name,
            "task": m.task,
            "model": m.onnx,
            "accuracy": m.accuracy,
            "validation": m.validation,
            "calibration": m.calibration,
            "description": m.description,
            "max_batch": m.max_batch,
            **({"metric": m.metric} if m.metric else {}),
            **({"program": m.program} if m.program else {}),
        }
        for m in models
    ]
    with console.status(f"registering {len(items)} models"):
        results = _register_items(args, items)
    _show_registered(args, results)


def cmd_models(args) -> None:
    with client_for(args) as client:
        archs = client.architectures()
        variants = client.variants()
    rows = (
        (a["task"], a["name"], v["name"], accuracy_cell(v), v["max_batch"], status_cell(v))
        for a in sorted(archs, key=lambda a: (a["task"], a["name"]))
        for v in variants
        if v["architecture"] == a["name"]
    )
    show(
        args,
        {"architectures": archs, "variants": variants},
        "models",
        ("task", "architecture", "variant", "accuracy", "max batch", "status"),
        rows,
    )


def cmd_variants(args) -> None:
    with client_for(args) as client:
        variants = client.variants(args.architecture)
    if args.json:
        print_json(variants)
        return
    print_variants(variants, f"variants of {args.architecture}" if args.architecture else "variants")


def cmd_profile(args) -> None:
    if args.data_dir:
        _profile_local(args.data_dir, [args.architecture], args.quick)
        from infaas.registry import Registry

        registry = Registry.open(args.data_dir)
        try:
            variants = [
                {
                    **v.model_dump(mode="json"),
                    "runtime": runtime_of(v.format)[0],
                    "loaded_on": [],
                    "profile": (p.model_dump(mode="json") if (p := registry.profile(v.name)) else None),
                }
                for v in registry.variants(args.architecture)
            ]
        finally:
            registry.close()
    else:
        with client_for(args) as client:
            wait_for_profiles(client, [args.architecture], args.quick)
            variants = client.variants(args.architecture)
    if args.json:
        print_json(variants)
    else:
        print_variants(variants, f"variants of {args.architecture}")
