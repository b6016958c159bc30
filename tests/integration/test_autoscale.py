"""Autoscaling end to end: a real server, an open-loop load ramp, and the decision log."""

from __future__ import annotations

import asyncio

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from tests.conftest import digits_body, scaling_settings, wait_until

pytestmark = pytest.mark.slow

SCALE_UP = {"replicate", "upgrade", "add_worker"}
SCALE_DOWN = {"unload", "downgrade", "remove_worker"}


def test_a_load_ramp_scales_up_and_after_it_scales_down(heavy_dir, tmp_path):
    settings = scaling_settings(heavy_dir, tmp_path / "d", scale_down_s=3.0, idle_unload_s=600)
    server = BackgroundServer(settings).start()
    client = Client(server.url)
    try:
        plane = server.services
        (name,) = {n for w in plane.cluster.workers for n in w.loaded_names()}
        variant, profile = plane.catalog.variants[name], plane.catalog.profiles[name]
        per_second = capacity_rps(profile, variant.max_batch) / 16  # requests of 16 rows
        stages = [(0.2 * per_second, 2.0), (1.6 * per_second, 6.0)]
        results = asyncio.run(
            ramp(
                server.url, "/v2/models/digits-conv/infer", digits_body(16), ["Content-Type: application/json"], stages
            )
        )
        assert sum(r["requests"] for r in results) > 0.5 * sum(rate * s for rate, s in stages), (results, name, profile)

        def kinds():
            return [d["kind"] for d in client.decisions(1000)]

        assert SCALE_UP & set(kinds()), kinds()
        assert results[0]["errors"] == 0 and results[1]["errors"] == 0, results
        # the load is over: the capacity goes again after the hysteresis time (3 s), replica then worker
        # (when the scale-up added one)
        assert wait_until(
            lambda: SCALE_DOWN & set(kinds()[max(i for i, k in enumerate(kinds()) if k in SCALE_UP) :]), timeout=60
        ), kinds()
        if "add_worker" in kinds():
            assert wait_until(lambda: "remove_worker" in kinds(), timeout=30), kinds()
            assert len(plane.cluster.workers) == 1
        log = client.decisions(1000)
        for d in log:
            if d["kind"] in SCALE_UP | SCALE_DOWN:
                assert d["reason"], d
        up = next(d for d in log if d["kind"] in SCALE_UP)
        assert "overloaded" in up["reason"]
        report = client.autoscale()
        assert report["ticks"] > 5 and report["errors"] == 0 and report["limits"]["max_workers"] == 2
    finally:
        client.close()
        server.stop()
