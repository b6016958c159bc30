"""Do three fresh installs keep and reject the same variants, whichever path registers them?

Registers a zoo family into three fresh data directories, one path each, profiling as that path
does by default:

1. the CLI straight into a data directory: ``infaas zoo add FAMILY --data-dir D1 --quick``;
2. a running server: ``infaas serve --data-dir D2`` + ``infaas zoo add FAMILY --url ...`` (the
   server profiles in the background, full runs);
3. the profiling benchmark: ``python bench/profile/run.py --quick`` (EfficientNet-Lite only).

Then prints every variant's verdict side by side and the disagreements (with both reasons), and
writes ``bench/results/agree.json``. Run one path at a time (timings must not overlap).

    python bench/profile/agree.py [--family efficientnet-lite]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from infaas.registry import Registry  # noqa: E402

console = Console()
INFAAS = [sys.executable, "-m", "infaas.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verdicts_of(data_dir: Path) -> dict[str, tuple[str, str]]:
    registry = Registry.open(data_dir)
    try:
        return {v.name: (v.status, v.reason) for v in registry.variants()}
    finally:
        registry.close()


def via_cli(family: str, work: Path) -> dict[str, tuple[str, str]]:
    data = work / "cli"
    subprocess.run(
        [*INFAAS, "zoo", "add", family, "--data-dir", str(data), "--quick"], check=True, stdout=subprocess.DEVNULL
    )
    return verdicts_of(data)


def via_server(family: str, work: Path) -> dict[str, tuple[str, str]]:
    data, port = work / "server", free_port()
    server = subprocess.Popen(
        [*INFAAS, "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while subprocess.run([*INFAAS, "models", "--url", url], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        subprocess.run([*INFAAS, "zoo", "add", family, "--url", url], check=True, stdout=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return verdicts_of(data)


def via_bench(family: str, work: Path) -> dict[str, tuple[str, str]]:
    out = work / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile" / "run.py"), "--quick", "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = json.loads(out.read_text())
    return {v["name"]: (v["status"], v["reason"]) for a in data["architectures"].values() for v in a["variants"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="efficientnet-lite")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "agree.json"))
    args = p.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    work = Path(tempfile.mkdtemp(prefix="infaas-agree-"))
    paths = {"cli --data-dir": via_cli, "server": via_server}
    if args.family == "efficientnet-lite":
        paths["bench --quick"] = via_bench
    runs: dict[str, dict[str, tuple[str, str]]] = {}
    for label, fn in paths.items():
        with console.status(f"{args.family} through {label}"):
            t0 = time.monotonic()
            runs[label] = fn(args.family, work)
        console.print(f"{label}: {len(runs[label])} variants in {time.monotonic() - t0:.0f} s")
    names = sorted(set().union(*runs.values()))
    table = Table(title=f"verdicts of {args.family}, one fresh install per path")
    table.add_column("variant")
    for label in runs:
        table.add_column(label)
    disagree = []
    for name in names:
        statuses = [runs[label].get(name, ("-", ""))[0] for label in runs]
        table.add_row(name, *statuses)
        if len(set(statuses)) > 1:
            disagree.append({"variant": name, **{label: runs[label].get(name, ("-", "")) for label in runs}})
    console.print(table)
    console.print(f"[bold]{len(names) - len(disagree)} of {len(names)} variants get the same verdict on every path[/]")
    for d in disagree:
        console.print(d)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "family": args.family,
                "variants": len(names),
                "disagreements": disagree,
                "verdicts": {k: {n: s for n, (s, _) in v.items()} for k, v in runs.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
