"""``infaas serve``: its flags and the command (the server itself is ``infaas.app``)."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console

from infaas.settings import load_settings

err = Console(stderr=True)


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--grpc-port", type=int, help="also serve KServe v2 over gRPC on this port (Triton uses 8001)")
    p.add_argument("--data-dir", help="registry and model store (env INFAAS_DATA_DIR)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--cores-per-worker", type=int, help="default: split the cores evenly")
    p.add_argument("--max-queue-delay-us", type=int, help="batching: longest wait for a fuller batch")
    p.add_argument(
        "--instances",
        type=int,
        help="runtime instances per loaded variant (default 1; one per core trades latency for throughput)",
    )
    p.add_argument("--min-workers", type=int, help="autoscaling: never fewer workers (default: --workers)")
    p.add_argument("--max-workers", type=int, help="autoscaling: never more (default: as many as cores allow)")
    p.add_argument("--scale-down-s", type=float, help="autoscaling: low load this long before capacity goes")
    p.add_argument(
        "--policy",
        choices=["infaas", "infaas-original"],
        help="selection and scaling rules (default infaas; infaas-original: the ATC'21 rules, a contender)",
    )
    p.add_argument("--no-autoscale", action="store_true", help="no controller: a fixed placement")
    p.add_argument(
        "--default-timeout-s", type=float, help="deadline of requests with neither latency_ms nor timeout (default 10)"
    )
    p.add_argument("--max-connections", type=int, help="concurrent HTTP connections / gRPC calls (default 1024)")
    p.add_argument(
        "--api-key",
        action="append",
        help="require this bearer token for inference (repeat for several; env INFAAS_API_KEYS=k1,k2)",
    )
    p.add_argument(
        "--management-api-key",
        action="append",
        help="bearer token for the management API (default: the --api-key ones)",
    )
    p.add_argument("--management-host", help="serve the management API on its own listener (with --management-port)")
    p.add_argument("--management-port", type=int, help="port of the management listener (0: any free)")
    p.add_argument(
        "--job-root",
        action="append",
        help="directory jobs may read under this directory (repeat; default: directory jobs off)",
    )
    p.add_argument(
        "--cluster",
        choices=["local", "ray"],
        help="where workers run: local processes (default) or Ray actors (needs infaas[ray])",
    )
    p.add_argument("--ray-address", help="Ray cluster to join (host:port or auto; default: start a local Ray)")
    p.add_argument("--ray-node-ip", help="this frontend's address in the Ray cluster (127.0.0.1: loopback only)")
    p.add_argument(
        "--node-host",
        help="address the Ray actors' request listeners bind (default: each node's Ray address; "
        "a node's INFAAS_NODE_HOST wins)",
    )
    p.add_argument("--node-ports", help="port range of those listeners, e.g. 41000-41099 (default: any free port)")
    p.add_argument(
        "--store",
        help="metadata store: sqlite (default, in the data dir) or redis://host:port/db, "
        "shared by several frontends (needs infaas[redis])",
    )
    p.add_argument("--config", help="JSON settings file (env INFAAS_CONFIG)")


def run_serve(args) -> None:
    """``infaas serve``: settings from file < environment < these flags; runs until interrupted."""
    from infaas.app import serve

    settings = load_settings(
        args.config,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        cores_per_worker=args.cores_per_worker,
        max_queue_delay_us=args.max_queue_delay_us,
        instances_per_variant=args.instances,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        scale_down_s=args.scale_down_s,
        autoscale=False if args.no_autoscale else None,
        policy=args.policy,
        api_keys=args.api_key,
        management_api_keys=args.management_api_key,
        management_host=args.management_host,
        management_port=args.management_port,
        job_roots=args.job_root,
        default_timeout_s=args.default_timeout_s,
        max_connections=args.max_connections,
        cluster=args.cluster,
        ray_address=args.ray_address,
        ray_node_ip=args.ray_node_ip,
        node_host=args.node_host,
        node_ports=args.node_ports,
        store=args.store,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    grpc_text = f" and grpc://{settings.host}:{settings.grpc_port}" if settings.grpc_port is not None else ""
    mgmt = (
        f"; management on http://{settings.management_host or settings.host}:{settings.management_port}"
        if settings.management_port is not None
        else ""
    )
    keys = "API keys required" if settings.api_keys or settings.management_api_keys else "no API keys"
    err.print(
        f"[bold]infaas[/] serving on http://{settings.host}:{settings.port}{grpc_text}{mgmt} "
        f"(data dir {settings.data_dir}, store {settings.store}, {settings.workers} "
        f"{'Ray actor' if settings.cluster == 'ray' else 'worker'}(s), {keys})"
    )
    serve(settings)
