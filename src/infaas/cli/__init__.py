"""``infaas`` command line: serve, register, models, variants, profile, infer, zoo, workers, job, decisions,
remove, load, unload, sim, demo."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from infaas.cli.common import client_for, err, parse_param
from infaas.cli.models import cmd_models, cmd_profile, cmd_register, cmd_variants, cmd_zoo
from infaas.cli.serve import add_serve_flags
from infaas.cli.sim import add_sim_flags, cmd_sim
from infaas.cli.tables import console, print_json, show
from infaas.client import InfaasClientError
from infaas.errors import InfaasError
from infaas.settings import load_settings


# ---- commands -------------------------------------------------------------------------------
def cmd_serve(args) -> None:
    from infaas.cli.serve import run_serve

    run_serve(args)


def _load_input(path: str) -> np.ndarray | dict[str, np.ndarray]:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data:
        return {k: data[k] for k in data.files}


def cmd_infer(args) -> None:
    from infaas.client import connect

    settings = load_settings()
    with connect(args.url or settings.url, api_key=args.api_key or settings.api_key) as client:
        result = client.infer(
            args.model,
            _load_input(args.input),
            version=args.version,
            parameters=dict(args.param or []),
            binary=not args.json_tensors,
            latency_ms=args.latency_ms,
            min_accuracy=args.min_accuracy,
            max_cost=args.max_cost,
        )
    if args.output:
        np.savez(args.output, **result.outputs)
    rows = (
        (name, f"{arr.dtype} {list(arr.shape)}", np.array2string(arr, threshold=12, edgeitems=3, precision=4))
        for name, arr in result.outputs.items()
    )
    show(
        args,
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "parameters": result.parameters,
            "outputs": result.outputs,
        },
        f"{result.model_name} → {result.parameters.get('variant', result.model_version)}",
        ("output", "datatype/shape", "values"),
        rows,
    )
    p = result.parameters
    if p and not args.json:
        console.print(
            f"[bold]worker[/] {p.get('worker')}  [bold]queue[/] {p.get('queue_ms')} ms  "
            f"[bold]compute[/] {p.get('compute_ms')} ms  [bold]batch[/] {p.get('batch_size')}  "
            f"[bold]total[/] {p.get('total_ms')} ms"
        )
        if p.get("predicted_ms") is not None:
            console.print(f"[bold]predicted[/] {p['predicted_ms']} ms  [bold]cost[/] ${p.get('cost_usd', 0):.3g}")
        console.print(f"[bold]why[/] {p.get('reason')}")


def cmd_workers(args) -> None:
    with client_for(args) as client:
        workers = client.workers()
        scaling = client.autoscale()
    if args.json:
        print_json({"workers": workers, "autoscale": scaling})
        return

    def pct(x):
        return "-" if x is None else f"{x:.0%}"

    def replicas(w: dict) -> str:  # READY ones by name; the others with their state (loading, draining ...)
        return "\n".join(v if s == "ready" else f"{v} ({s})" for v, s in sorted(w["replicas"].items())) or "-"

    rows = (
        (
            w["name"],
            ",".join(map(str, w["cores"])),
            w["state"],
            w["restarts"],
            pct(w["cpu"]),
            "-" if w["rss_mb"] is None else f"{w['rss_mb']:.0f}",
            w["outstanding"],
            replicas(w),
        )
        for w in workers
    )
    show(args, workers, "workers", ("worker", "cores", "state", "restarts", "cpu", "MB", "in flight", "replicas"), rows)
    if not scaling.get("enabled"):
        console.print("autoscaling is off")
        return
    lim = scaling["limits"]
    console.print(
        f"autoscaling: workers {lim['min_workers']}..{lim['max_workers']}, scale down after "
        f"{lim['scale_down_s']:g} s of low load, unload after {lim['idle_unload_s']:g} s idle"
    )
    states = scaling["variants"]
    rows = (
        (
            n,
            s.get("state", "-"),
            f"{s.get('demand_rps', 0):.0f}/{s.get('capacity_rps', 0):.0f}",
            _placed_on(s.get("replicas", []), s.get("instances", [])),
            s.get("reason", ""),
        )
        for n, s in sorted(states.items())
    )
    show(args, states, "variant states", ("variant", "state", "rows/s demand/capacity", "on", "why"), rows)


def _placed_on(replicas: list[str], instances: list[int]) -> str:
    """``w0,w1 x3``: the workers hosting a variant, with the runtime instances where more than one."""
    counts = instances if len(instances) == len(replicas) else [1] * len(replicas)
    return ",".join(w if n == 1 else f"{w} x{n}" for w, n in zip(replicas, counts, strict=True))


def cmd_job(args) -> None:
    from infaas.cli.jobs import run_job_command

    with client_for(args) as client:
        run_job_command(args, client)


def cmd_decisions(args) -> None:
    with client_for(args) as client:
        decisions = client.decisions(args.limit, kind=args.kind, since=args.since)
    rows = (
        (
            time.strftime("%H:%M:%S", time.localtime(d["time"])),
            d["kind"],
            " on ".join(filter(None, (d.get("variant"), d.get("worker")))) or "-",
            d["reason"] + (f"  (+{d['similar']} like it this second)" if d.get("similar") else ""),
        )
        for d in decisions
    )
    what = f"decisions: {args.kind}" if args.kind else "recent decisions"
    show(
        args, decisions, what + (f" since {args.since}" if args.since else ""), ("time", "kind", "what", "reason"), rows
    )


def cmd_remove(args) -> None:
    with client_for(args) as client:
        client.remove(args.architecture)
    console.print(f"removed {args.architecture}")


def cmd_load(args) -> None:
    with client_for(args) as client:
        workers = client.load_model(args.model, args.replicas)
    console.print(f"{args.model} is on {', '.join(workers)} (the controller may scale it from here)")


def cmd_unload(args) -> None:
    with client_for(args) as client:
        workers = client.unload_model(args.model)
    console.print(f"{args.model} unloaded from {', '.join(workers)}" if workers else f"{args.model} was not loaded")


def cmd_demo(args) -> None:
    from infaas.cli.demo import run_demo

    run_demo(queries=args.queries, concurrency=args.concurrency, workers=args.workers, scaling=not args.no_scaling)


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infaas", description="Model-less inference serving.")
    sub = parser.add_subparsers(dest="command", required=True)

    def registration_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="register into this data directory instead of a running server")
        p.add_argument("--no-wait", action="store_true", help="do not wait for variant generation and profiling")
        p.add_argument("--quick", action="store_true", help="quick profiling (fewer runs)")

    def client_cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument(
            "--url",
            help="server URL (env INFAAS_URL, default http://127.0.0.1:8000; infer also takes grpc://host:port)",
        )
        p.add_argument("--api-key", help="API key to send (env INFAAS_API_KEY)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = sub.add_parser("serve", help="run the server (KServe v2 REST)")
    add_serve_flags(p)
    p.set_defaults(fn=cmd_serve)

    p = client_cmd("register", "register an ONNX model for a task")
    p.add_argument("name")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True, help="ONNX file")
    p.add_argument("--accuracy", type=float, help="declared top-1 accuracy (0..1)")
    p.add_argument("--validation", help=".npz with 'inputs' and 'labels': accuracy is measured")
    p.add_argument("--calibration", help=".npz with 'inputs' (no labels) to calibrate INT8 variants on")
    p.add_argument(
        "--program", help="the same model as a torch.export program (.pt2): PyTorch's variants beside ONNX's"
    )
    p.add_argument("--description")
    p.add_argument("--max-batch", type=int)
    p.add_argument(
        "--metric",
        choices=("top1", "cosine", "rel-l2"),
        help="the task's quality metric, for a new task (default: top1 for classifier outputs, else cosine)",
    )
    registration_flags(p)
    p.set_defaults(fn=cmd_register)

    p = client_cmd("models", "list tasks, architectures and variants")
    p.set_defaults(fn=cmd_models)

    p = client_cmd("variants", "list the variants of an architecture")
    p.add_argument("architecture", nargs="?")
    p.set_defaults(fn=cmd_variants)

    p = client_cmd("profile", "generate and profile an architecture's variants (progress bars)")
    p.add_argument("architecture")
    p.add_argument("--quick", action="store_true", help="fewer runs per batch size")
    p.add_argument("--data-dir", help="profile in this process, in this data directory, without a server")
    p.set_defaults(fn=cmd_profile)

    p = client_cmd("infer", "run an inference")
    p.add_argument("model", help="task (model-less), architecture, or variant")
    p.add_argument("--input", required=True, help=".npy (the model's only input) or .npz (by input name)")
    p.add_argument("--version", help="variant of the architecture")
    p.add_argument(
        "--param",
        action="append",
        type=parse_param,
        metavar="KEY=VALUE",
        help="request parameter (repeatable), e.g. timeout=100000",
    )
    p.add_argument("--latency-ms", type=float, dest="latency_ms", help="objective: latency in ms")
    p.add_argument("--min-accuracy", type=float, dest="min_accuracy", help="objective: minimum top-1 accuracy")
    p.add_argument("--max-cost", type=float, dest="max_cost", help="objective: USD per 1000 inferences")
    p.add_argument("--output", help="save outputs to this .npz")
    p.add_argument("--json-tensors", action="store_true", help="send tensors as JSON, not binary")
    p.set_defaults(fn=cmd_infer)

    p = client_cmd("zoo", "ready model families")
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("family", nargs="?", default="digits", choices=["digits", "digits-heavy", "efficientnet-lite"])
    registration_flags(p)
    p.set_defaults(fn=cmd_zoo)

    p = client_cmd("workers", "list workers and what they host")
    p.set_defaults(fn=cmd_workers)

    p = client_cmd("job", "offline batch jobs: submit, status [--watch], result, cancel")
    p.add_argument("action", choices=["submit", "status", "result", "cancel"])
    p.add_argument("target", nargs="?", help="submit: a task, architecture or variant; others: the job id")
    p.add_argument("--input", help="submit: .npz of inputs, by input name")
    p.add_argument("--dir", help="submit: a directory of images (on the server) for an image task")
    p.add_argument("--min-accuracy", type=float, dest="min_accuracy", help="submit: lowest accuracy allowed")
    p.add_argument("--watch", action="store_true", help="status: a progress bar until it finishes")
    p.add_argument("-o", "--output", help="result: where to save the outputs (.npz)")
    p.set_defaults(fn=cmd_job)

    p = client_cmd("decisions", "recent decisions and their reasons")
    p.add_argument("--kind", help="only these kinds, comma-separated (e.g. add_worker,replicate; select: queries)")
    p.add_argument("--since", help="only since: a Unix time, ISO 8601, or a span back such as 10m or 2h")
    p.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    p.set_defaults(fn=cmd_decisions)

    p = client_cmd("remove", "remove an architecture and its variants", json_flag=False)
    p.add_argument("architecture")
    p.set_defaults(fn=cmd_remove)

    p = client_cmd("load", "load a variant (or an architecture's default) on workers", json_flag=False)
    p.add_argument("model", help="variant or architecture")
    p.add_argument("--replicas", type=int, default=1, help="on this many workers in all (default 1)")
    p.set_defaults(fn=cmd_load)

    p = client_cmd("unload", "unload a variant from every worker", json_flag=False)
    p.add_argument("model", help="variant")
    p.set_defaults(fn=cmd_unload)

    p = sub.add_parser("sim", help="simulate a trace on a fleet: infaas, infaas-original and static contenders")
    add_sim_flags(p)
    p.set_defaults(fn=cmd_sim)

    p = sub.add_parser("demo", help="embedded server + digits zoo + a stream of queries + an autoscaling ramp")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-scaling", action="store_true", help="skip part 2 (the autoscaling ramp, ~1 minute)")
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
