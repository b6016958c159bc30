"""Selection and admission agree (issue 33): on an idle worker, for every variant of the digits zoo,
what the selection predicts for a request is what the worker's admission predicts for it, and a
query whose objective the prediction meets is served, one it misses refused up front (400), never accepted by the selection and then refused by the worker (503)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from infaas.client import Client
from infaas.policy import predict_ms
from tests.conftest import assert_selection_and_admission_agree, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(profiled_server):
    return profiled_server


def test_selection_and_admission_predict_the_same_for_every_zoo_variant(server):
    plane = server.services
    cores = plane.cluster.cores_per_worker
    names = sorted(
        v.name
        for v in plane.catalog.variants.values()
        if v.status == "ready" and v.threads <= cores and v.name in plane.catalog.profiles
    )
    assert len(names) >= 6, names  # every architecture of the zoo, in its fp32 and INT8 forms at least
    seen = {}
    for name in names:
        seen[name] = assert_selection_and_admission_agree(server, name)
    assert len({arch.split(".")[0] for arch in seen}) >= 3, seen


def test_an_objective_the_shared_prediction_meets_is_served_and_one_it_misses_refused_up_front(server, digits_samples):
    """The contract seen from a client: a 400 up front, or an answer; the selection's acceptance is
    not undone by the worker's admission."""
    x, _ = digits_samples
    plane = server.services
    worker = plane.cluster.workers[0]
    arch = "digits-mlp"
    with Client(server.url) as c:
        for _ in range(5):  # the serving path's own overhead learned on the replica that serves
            name = c.infer(arch, {"input": x[:1]}, latency_ms=1000).parameters["variant"]
        slot = plane.latency.slot(
            worker.name, name, {name: 0}, plane.catalog.profiles, plane.catalog.variants, now=time.monotonic()
        )
        selected = predict_ms(plane.catalog.profiles[name], plane.catalog.variants[name].max_batch, 1, *slot[1:])
        fastest = min(plane.catalog.profiles[v.name].cost_ms(1) for v in plane.catalog.by_arch[arch])
        with pytest.raises(Exception, match="unreachable"):
            c.infer(arch, {"input": x[:1]}, latency_ms=fastest * 0.5)
        objective = max(selected * 3, 5.0)
        for _ in range(5):
            r = c.infer(arch, {"input": x[:1]}, latency_ms=objective)
            assert r.parameters["predicted_ms"] < objective
    metrics = httpx.get(server.url + "/metrics").text
    refused = [x for x in metrics.splitlines() if x.startswith("infaas_selected_then_refused_total{")]
    assert all(x.endswith(" 0.0") for x in refused), refused


def test_a_replica_refused_on_what_was_learned_there_is_probed_once_then_refused_as_demand(server, digits_samples):
    """A learned overhead that puts an idle replica over the objective refuses every query there, and
    only an answer could correct it: the first refused query goes there anyway (a probe, said in its
    reason), the next within PROBE_S is a 429 that its worker counts as demand turned away."""
    x, _ = digits_samples
    plane = server.services
    worker = plane.cluster.workers[0]
    arch = "digits-mlp"
    with Client(server.url) as c:
        c.infer(arch, {"input": x[:1]}, latency_ms=1000)  # one of its variants loaded
        mine = [n for n in worker.loaded_names() if plane.catalog.variants[n].architecture == arch]
        for name in mine:  # as if their first answers had come back half a second late
            plane.latency.overhead_ms[(worker.name, name)] = 500.0

        def turned():
            stats = asyncio.run_coroutine_threadsafe(worker.stats(), server.loop).result(10)["variants"]
            return sum(stats[n]["turned_away_requests"] for n in mine if n in stats)

        before = turned()
        probe = c.infer(arch, {"input": x[:1]}, latency_ms=5.0)  # met when idle as profiled
        assert probe.parameters["reason"].startswith("probe of an idle replica"), probe.parameters
        with pytest.raises(Exception, match="saturated"):
            c.infer(arch, {"input": x[:1]}, latency_ms=5.0)
    assert wait_until(lambda: turned() == before + 1, timeout=5), (turned(), before)
