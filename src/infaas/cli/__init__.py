"""``infaas`` command line: serve, register, models, variants, infer, zoo, demo, workers, decisions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from infaas.client import Client, InfaasClientError
from infaas.errors import InfaasError
from infaas.settings import load_settings

console = Console()
err = Console(stderr=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    raise TypeError(type(obj).__name__)


def _parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param needs key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _client(args) -> Client:
    return Client(args.url or load_settings().url)


# ---- commands -------------------------------------------------------------------------------
def cmd_serve(args) -> None:
    from infaas.frontend.server import serve

    settings = load_settings(args.config, data_dir=args.data_dir, host=args.host, port=args.port,
                             workers=args.workers, cores_per_worker=args.cores_per_worker,
                             max_queue_delay_us=args.max_queue_delay_us,
                             instances_per_variant=args.instances)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    err.print(f"[bold]infaas[/] serving on http://{settings.host}:{settings.port} "
              f"(data dir {settings.data_dir}, {settings.workers} worker(s))")  # fmt: skip
    serve(settings)


def _register_local(data_dir: str, items: list[dict]) -> list[dict]:
    from infaas.registry import Registry

    registry = Registry.open(data_dir)
    try:
        out = []
        for item in items:
            arch, variant = registry.register(**item)
            out.append({"architecture": arch.model_dump(), "variants": [variant.model_dump()]})
        return out
    finally:
        registry.close()


def _register_items(args, items: list[dict]) -> list[dict]:
    """Register through the server (default) or straight into a data directory (--data-dir)."""
    if args.data_dir:
        return _register_local(args.data_dir, items)
    with _client(args) as client:
        out = []
        for item in items:
            item = dict(item)
            out.append(client.register(item.pop("name"), item.pop("task"), item.pop("model"), **item))
        return out


def _registered_table(results: list[dict]) -> Table:
    table = Table(title="registered")
    for col in ("architecture", "task", "accuracy", "variant"):
        table.add_column(col)
    for r in results:
        a = r["architecture"]
        acc = "-" if a["accuracy"] is None else f"{a['accuracy']:.3f} ({a['accuracy_source']})"
        table.add_row(a["name"], a["task"], acc, ", ".join(v["name"] for v in r["variants"]))
    return table


def cmd_register(args) -> None:
    item = {"name": args.name, "task": args.task, "model": args.model, "accuracy": args.accuracy,
            "validation": args.validation, "description": args.description or ""}  # fmt: skip
    if args.max_batch:
        item["max_batch"] = args.max_batch
    results = _register_items(args, [item])
    _print_json(results) if args.json else console.print(_registered_table(results))


def cmd_zoo(args) -> None:
    from infaas.zoo import FAMILIES, build_family

    if args.action == "list":
        for name in FAMILIES:
            console.print(name)
        return
    with console.status(f"building zoo family {args.family} (locally, nothing is downloaded)"):
        models = build_family(args.family)
    items = [{"name": m.name, "task": m.task, "model": m.onnx, "accuracy": m.accuracy,
              "validation": m.validation, "description": m.description, "max_batch": m.max_batch}
             for m in models]  # fmt: skip
    with console.status(f"registering {len(items)} models"):
        results = _register_items(args, items)
    _print_json(results) if args.json else console.print(_registered_table(results))


def cmd_models(args) -> None:
    with _client(args) as client:
        archs = client.architectures()
        variants = client.variants()
    if args.json:
        _print_json({"architectures": archs, "variants": variants})
        return
    table = Table(title="models")
    for col in ("task", "architecture", "variant", "accuracy", "max batch", "status"):
        table.add_column(col)
    for a in sorted(archs, key=lambda a: (a["task"], a["name"])):
        for v in [v for v in variants if v["architecture"] == a["name"]]:
            acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.3f} ({v['accuracy_source']})"
            status = f"loaded on {', '.join(v['loaded_on'])}" if v["loaded_on"] else v["status"]
            table.add_row(a["task"], a["name"], v["name"], acc, str(v["max_batch"]), status)
    console.print(table)


def cmd_variants(args) -> None:
    with _client(args) as client:
        variants = client.variants(args.architecture)
    if args.json:
        _print_json(variants)
        return
    table = Table(title=f"variants of {args.architecture}" if args.architecture else "variants")
    for col in ("variant", "format", "provider", "threads", "max batch", "accuracy", "status"):
        table.add_column(col)
    for v in variants:
        acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.3f} ({v['accuracy_source']})"
        status = f"loaded on {', '.join(v['loaded_on'])}" if v["loaded_on"] else v["status"]
        table.add_row(v["name"], v["format"], v["provider"], str(v["threads"]), str(v["max_batch"]),
                      acc, status)  # fmt: skip
    console.print(table)


def _load_input(path: str) -> np.ndarray | dict[str, np.ndarray]:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data:
        return {k: data[k] for k in data.files}


def cmd_infer(args) -> None:
    params = dict(args.param or [])
    with _client(args) as client:
        result = client.infer(args.model, _load_input(args.input), version=args.version,
                              parameters=params, binary=not args.json_tensors)  # fmt: skip
    if args.output:
        np.savez(args.output, **result.outputs)
    if args.json:
        _print_json({"model_name": result.model_name, "model_version": result.model_version,
                     "parameters": result.parameters, "outputs": result.outputs})  # fmt: skip
        return
    table = Table(title=f"{result.model_name} → {result.parameters.get('variant', result.model_version)}")
    for col in ("output", "datatype/shape", "values"):
        table.add_column(col)
    for name, arr in result.outputs.items():
        text = np.array2string(arr, threshold=12, edgeitems=3, precision=4)
        table.add_row(name, f"{arr.dtype} {list(arr.shape)}", text)
    console.print(table)
    p = result.parameters
    if p:
        console.print(f"[bold]worker[/] {p.get('worker')}  [bold]queue[/] {p.get('queue_ms')} ms  "
                      f"[bold]compute[/] {p.get('compute_ms')} ms  [bold]batch[/] {p.get('batch_size')}  "
                      f"[bold]total[/] {p.get('total_ms')} ms")  # fmt: skip
        console.print(f"[bold]why[/] {p.get('reason')}")


def cmd_workers(args) -> None:
    with _client(args) as client:
        workers = client.workers()
    if args.json:
        _print_json(workers)
        return
    table = Table(title="workers")
    for col in ("worker", "pid", "cores", "alive", "restarts", "in flight", "loaded variants"):
        table.add_column(col)
    for w in workers:
        table.add_row(w["name"], str(w["pid"]), ",".join(map(str, w["cores"])), str(w["alive"]),
                      str(w["restarts"]), str(w["outstanding"]), "\n".join(w["loaded"]) or "-")  # fmt: skip
    console.print(table)


def cmd_decisions(args) -> None:
    import time

    with _client(args) as client:
        decisions = client.decisions(args.limit)
    if args.json:
        _print_json(decisions)
        return
    table = Table(title="recent decisions")
    for col in ("time", "kind", "reason"):
        table.add_column(col)
    for d in decisions:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(d["time"])), d["kind"], d["reason"])
    console.print(table)


def cmd_remove(args) -> None:
    with _client(args) as client:
        client.remove(args.architecture)
    console.print(f"removed {args.architecture}")


def cmd_demo(args) -> None:
    from infaas.cli.demo import run_demo

    run_demo(queries=args.queries, concurrency=args.concurrency, workers=args.workers)


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infaas", description="Model-less inference serving.")
    sub = parser.add_subparsers(dest="command", required=True)

    def client_cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--url", help="server URL (env INFAAS_URL, default http://127.0.0.1:8000)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = sub.add_parser("serve", help="run the server (KServe v2 REST)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", help="registry and model store (env INFAAS_DATA_DIR)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--cores-per-worker", type=int, help="default: split the cores evenly")
    p.add_argument("--max-queue-delay-us", type=int, help="batching: longest wait for a fuller batch")
    p.add_argument("--instances", type=int,
                   help="runtime instances per loaded variant (default 1; one per core trades latency for throughput)")
    p.add_argument("--config", help="JSON settings file (env INFAAS_CONFIG)")
    p.set_defaults(fn=cmd_serve)

    p = client_cmd("register", "register an ONNX model for a task")
    p.add_argument("name")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True, help="ONNX file")
    p.add_argument("--accuracy", type=float, help="declared top-1 accuracy (0..1)")
    p.add_argument("--validation", help=".npz with 'inputs' and 'labels': accuracy is measured")
    p.add_argument("--description")
    p.add_argument("--max-batch", type=int)
    p.add_argument("--data-dir", help="register into this data directory instead of a running server")
    p.set_defaults(fn=cmd_register)

    p = client_cmd("models", "list tasks, architectures and variants")
    p.set_defaults(fn=cmd_models)

    p = client_cmd("variants", "list the variants of an architecture")
    p.add_argument("architecture", nargs="?")
    p.set_defaults(fn=cmd_variants)

    p = client_cmd("infer", "run an inference")
    p.add_argument("model", help="task (model-less), architecture, or variant")
    p.add_argument("--input", required=True, help=".npy (the model's only input) or .npz (by input name)")
    p.add_argument("--version", help="variant of the architecture")
    p.add_argument("--param", action="append", type=_parse_param, metavar="KEY=VALUE",
                   help="request parameter (repeatable), e.g. timeout=100000")  # fmt: skip
    p.add_argument("--output", help="save outputs to this .npz")
    p.add_argument("--json-tensors", action="store_true", help="send tensors as JSON, not binary")
    p.set_defaults(fn=cmd_infer)

    p = client_cmd("zoo", "ready model families")
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("family", nargs="?", default="digits", choices=["digits", "efficientnet-lite"])
    p.add_argument("--data-dir", help="register into this data directory instead of a running server")
    p.set_defaults(fn=cmd_zoo)

    p = client_cmd("workers", "list workers and what they host")
    p.set_defaults(fn=cmd_workers)

    p = client_cmd("decisions", "recent decisions and their reasons")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_decisions)

    p = client_cmd("remove", "remove an architecture and its variants", json_flag=False)
    p.add_argument("architecture")
    p.set_defaults(fn=cmd_remove)

    p = sub.add_parser("demo", help="embedded server + digits zoo + a stream of queries")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except InfaasClientError as exc:
        err.print(f"[red]error[/] {exc.message}" if exc.status == 0 else f"[red]error {exc.status}[/] {exc.message}")
        sys.exit(1)
    except InfaasError as exc:
        err.print(f"[red]error[/] {exc.message}")
        sys.exit(1)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
