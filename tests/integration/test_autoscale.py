"""Autoscaling end to end: a real server, an open-loop load ramp, and the decision log."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from infaas.zoo import digits
from tests.conftest import digits_body, scaling_settings, wait_until

pytestmark = pytest.mark.slow

SCALE_UP = {"replicate", "upgrade", "add_worker"}
SCALE_DOWN = {"unload", "downgrade", "remove_worker"}
JSON = ["Content-Type: application/json"]


@contextlib.contextmanager
def serving(heavy_dir, tmp_path, **overrides):
    """A scaling server over digits-conv with one variant loaded: (server, client, plane, name)."""
    server = BackgroundServer(scaling_settings(heavy_dir, tmp_path / "d", idle_unload_s=600, **overrides)).start()
    client = Client(server.url)
    try:
        plane = server.services
        (name,) = {n for w in plane.cluster.workers for n in w.loaded_names()}
        yield server, client, plane, name
    finally:
        client.close()
        server.stop()


def test_a_load_ramp_scales_up_and_after_it_scales_down(heavy_dir, tmp_path):
    with serving(heavy_dir, tmp_path, scale_down_s=3.0) as (server, client, plane, name):
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


def test_requests_the_selection_turns_away_are_demand_and_scale_their_variant_up(heavy_dir, tmp_path):
    """A 1-row query whose objective leaves no room to wait behind another app's 16-row batch is
    refused up front (429) while one computes: demand, though far under the replica's throughput.
    The frontend tells the worker, the worker counts it, and the autoscaler scales up, saying why."""
    # two 1-core workers, the variant on one: room for a replica on the other (another worker is for CPU)
    with serving(heavy_dir, tmp_path, workers=2) as (server, client, plane, name):
        variant, profile = plane.catalog.variants[name], plane.catalog.profiles[name]
        assert sum(w.hosts(name) for w in plane.cluster.workers) == 1
        one = {"input": digits.sample_inputs(1)[0]}
        for _ in range(5):  # the serving path's own overhead, learned on the replica
            idle = client.infer("digits-conv", one, latency_ms=1000).parameters["predicted_ms"]
        # met when the replica is idle, missed behind most of a 16-row batch
        objective = idle + 0.25 * profile.cost_ms(16)
        assert profile.cost_ms(16) > 4 * idle, (profile, idle)
        bulk = capacity_rps(profile, variant.max_batch) / 16 * 0.3  # another app's 16-row requests: 30 % busy
        records: list[tuple[int, float, int, float]] = []

        async def both():
            await asyncio.gather(
                ramp(server.url, f"/v2/models/{name}/infer", digits_body(16), JSON, [(bulk, 8.0)]),
                ramp(
                    server.url,
                    "/v2/models/digits-conv/infer",
                    digits_body(1, latency_ms=objective),
                    JSON,
                    [(20.0, 8.0)],
                    records=records,
                ),
            )

        asyncio.run(both())
        refused = sum(status == 429 for _, _, status, _ in records)
        assert refused >= 3, (len(records), refused, objective)

        def counted():  # over its replicas (a second may have come)
            reports = [
                asyncio.run_coroutine_threadsafe(w.stats(), server.loop).result(10) for w in plane.cluster.workers
            ]
            return sum(r["variants"][name]["turned_away_requests"] for r in reports if name in r["variants"])

        # every request the selection refused, counted once where its variant runs (a 429 could also
        # be the worker's own refusal, which is not counted here)
        assert wait_until(lambda: counted() > 0.8 * refused, timeout=5), (counted(), refused)
        assert counted() <= refused
        up = [d for d in client.decisions(1000) if d["kind"] in SCALE_UP]
        assert up and "turned away" in up[0]["reason"], up
