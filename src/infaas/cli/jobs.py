"""``infaas job``: submit offline jobs, follow them (with a progress bar), fetch results, cancel."""

from __future__ import annotations

import time

import numpy as np
from rich.progress import Progress

from infaas.cli.common import err
from infaas.cli.tables import console, print_json, show
from infaas.client import Client


def _job_line(job: dict) -> str:
    return f"{job['id']} {job['status']} {job['done_rows']}/{job['rows']} rows" + (
        f" ({job['reason']})" if job["reason"] else ""
    )


def run_job_command(args, client: Client) -> None:
    if args.action == "submit":
        if not args.target or (args.input is None) == (args.dir is None):
            raise ValueError("job submit MODEL needs --input FILE.npz or --dir DIRECTORY (of images)")
        job = client.submit_job(args.target, args.input, directory=args.dir, min_accuracy=args.min_accuracy)
        if args.json:
            print_json(job)
        else:
            console.print(f"job [bold]{job['id']}[/] submitted: {job['rows']} rows of {job['model']}")
            console.print(f"follow it with: infaas job status {job['id']} --watch")
        return
    if args.action == "status" and not args.target:
        jobs = client.jobs()
        rows = ((j["id"], j["model"], j["status"], f"{j['done_rows']}/{j['rows']}", j["reason"]) for j in jobs)
        show(args, jobs, "jobs", ("job", "model", "status", "rows", "reason"), rows)
        return
    if not args.target:
        raise ValueError(f"job {args.action} needs a job id")
    if args.action == "cancel":
        job = client.cancel_job(args.target)
        print_json(job) if args.json else console.print(_job_line(job))
    elif args.action == "result":
        outputs = client.job_result(args.target)
        out = args.output or f"{args.target}.npz"
        np.savez(out, **outputs)
        console.print(f"saved {', '.join(f'{k} {list(v.shape)}' for k, v in outputs.items())} to {out}")
    elif args.watch:
        _watch_job(client, args.target)
    else:
        job = client.job(args.target)
        print_json(job) if args.json else console.print(_job_line(job))


def _watch_job(client: Client, job_id: str) -> None:
    """A progress bar until the job finishes; its description says when and why it is paused."""
    job = client.job(job_id)
    with Progress(console=err) as progress:
        bar = progress.add_task(job_id, total=job["rows"])
        while True:
            job = client.job(job_id)
            what = job["status"] + (f": {job['reason']}" if job["status"] == "paused" else "")
            progress.update(bar, completed=job["done_rows"], description=f"{job_id} {what}"[:70])
            if job["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
    console.print(_job_line(job))
    if job["status"] == "done":
        used = ", ".join(f"{v} ({n})" for v, n in job["variants"].items())
        console.print(f"served by {used}; result: infaas job result {job_id} -o out.npz")
