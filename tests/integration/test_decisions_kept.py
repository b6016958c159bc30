"""The control decisions of a burst stay findable under query traffic: a real server scales up for a
burst, then serves model-less queries at 30 a second for a minute, and ``infaas decisions --kind
add_worker,replicate`` still lists the burst's actions (the CLI, as a user would run it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from tests.conftest import digits_body, scaling_settings

pytestmark = pytest.mark.slow


def test_a_bursts_scaling_actions_are_listed_after_a_minute_of_objective_queries(heavy_dir, tmp_path):
    # nothing scales down during the minute: the log must keep the burst
    settings = scaling_settings(
        heavy_dir, tmp_path / "d", scale_down_s=600.0, idle_unload_s=600, decision_log_size=1000
    )
    server = BackgroundServer(settings).start()
    client = Client(server.url)
    headers = ["Content-Type: application/json"]
    try:
        plane = server.services
        (name,) = {n for w in plane.cluster.workers for n in w.loaded_names()}
        variant, profile = plane.catalog.variants[name], plane.catalog.profiles[name]
        per_second = capacity_rps(profile, variant.max_batch) / 16  # requests of 16 rows
        asyncio.run(
            ramp(server.url, "/v2/models/digits-conv/infer", digits_body(16), headers, [(1.6 * per_second, 6.0)])
        )
        burst = [d for d in client.decisions(1000) if d["kind"] in ("add_worker", "replicate")]
        assert burst, client.decisions(1000)
        queries = asyncio.run(
            ramp(
                server.url,
                "/v2/models/digits-classification/infer",
                digits_body(1, latency_ms=1000),
                headers,
                [(30.0, 60.0)],
            )
        )
        assert queries[0]["requests"] >= 0.9 * 30 * 60, queries
        out = subprocess.run(
            [sys.executable, "-m", "infaas.cli", "decisions", "--url", server.url, "--kind", "add_worker,replicate"]
            + ["--limit", "100", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        listed = json.loads(out.stdout)
        assert {(d["time"], d["kind"]) for d in burst} <= {(d["time"], d["kind"]) for d in listed}
        assert all(d["reason"] for d in listed)
        selections = client.decisions(100_000, kind="select")
        assert sum(1 + d["similar"] for d in selections) >= 0.9 * 30 * 60  # sampled, and counted
        assert len(selections) < 1000
        table = subprocess.run(
            [sys.executable, "-m", "infaas.cli", "decisions", "--url", server.url, "--kind", "add_worker,replicate"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "add_worker" in table or "replicate" in table
        bad = subprocess.run(
            [sys.executable, "-m", "infaas.cli", "decisions", "--url", server.url, "--kind", "bogus"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "bogus" in (bad.stdout + bad.stderr)
    finally:
        client.close()
        server.stop()
