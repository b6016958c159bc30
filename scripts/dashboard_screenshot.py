"""docs/img/dashboard.png: the dashboard under load, taken by Debian's chromium (Playwright drives it).

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/img/dashboard.png]

Starts an embedded server with the digits zoo (registered and profiled, quick) and the heavy digits
model on 1-core workers (at most 2), sends model-less queries and a burst past one worker's
capacity, and takes the screenshot once the controller has scaled up.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from infaas.app import BackgroundServer  # noqa: E402
from infaas.loadgen import ramp  # noqa: E402
from infaas.policy.autoscale import capacity_rps  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.zoo import build_family, digits  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "dashboard.png"))
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="infaas-dashboard-")) / "data"
    # the digits zoo and the heavy digits model, registered and profiled (quick) before the server starts
    digits.register_and_profile(data, build_family("digits") + [digits.heavy()])
    settings = Settings(data_dir=data, port=0, workers=1, cores_per_worker=1, max_workers=2, scale_down_s=600.0)
    server = BackgroundServer(settings).start()
    try:
        name = next(n for w in server.services.cluster.workers for n in w.loaded_names() if "conv" in n)
        profile, variant = server.services.catalog.profiles[name], server.services.catalog.variants[name]
        x, _ = digits.sample_inputs(16)
        heavy = orjson.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 64], "data": x.ravel().tolist()}]}
        )
        one = orjson.dumps(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x[:1].ravel().tolist()}],
                "parameters": {"latency_ms": 50, "min_accuracy": 0.9},
            }
        )
        rate = 1.5 * capacity_rps(profile, variant.max_batch) / 16
        json_header = ["Content-Type: application/json"]

        def load() -> None:
            async def both() -> None:
                await asyncio.gather(
                    ramp(server.url, "/v2/models/digits-conv/infer", heavy, json_header, [(rate, 25.0)]),
                    ramp(server.url, "/v2/models/digits-classification/infer", one, json_header, [(20.0, 25.0)]),
                )

            asyncio.run(both())

        threading.Thread(target=load, daemon=True).start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(server.url + "/dashboard")
            page.wait_for_selector(
                '#decisions tr[data-kind="replicate"], #decisions tr[data-kind="add_worker"]', timeout=60_000
            )
            page.wait_for_timeout(6_000)  # a few refreshes of history in the sparklines
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)  # the viewport: live, query, decisions, workers
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
