"""Runtime instances of a replica, grown and shrunk on a live worker: by hand (the placement's
``resize``), across a worker restart, and by the autoscaler under a load ramp on a 2-core worker."""

from __future__ import annotations

import asyncio
import threading

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.errors import InvalidInput
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from infaas.zoo import digits
from tests.conftest import digits_body, scaling_settings, wait_until

pytestmark = pytest.mark.slow


def run(server, coro, timeout=120):
    return asyncio.run_coroutine_threadsafe(coro, server.loop).result(timeout)


def single_threaded(server, worker) -> str:
    """Host only the fastest single-threaded form of digits-conv taking batches of 16 on ``worker``
    (the profiles decide which runtime): on a 2-core worker it leaves a core for a second instance."""
    plane = server.services
    name = max(
        (v.name for v in plane.catalog.by_arch["digits-conv"] if v.status == "ready" and v.threads == 1),
        key=lambda n: (plane.catalog.variants[n].max_batch, plane.catalog.profiles[n].throughput),
    )
    for other in set(worker.loaded_names()) - {name}:
        run(server, worker.unload(other))
    run(server, plane.placement.load(plane.catalog.variants[name], worker))
    return name


def instances(server, worker, name) -> int:
    return run(server, worker.stats())["variants"][name]["instances"]


def test_a_replica_grows_and_shrinks_while_it_serves_and_keeps_its_count_across_a_restart(heavy_dir, tmp_path):
    settings = scaling_settings(heavy_dir, tmp_path / "d", cores_per_worker=2, max_workers=1, autoscale=False)
    server = BackgroundServer(settings).start()
    plane = server.services
    stop, failures, served = threading.Event(), [], [0]
    x, _ = digits.sample_inputs(16)

    def traffic():
        with Client(server.url) as c:
            while not stop.is_set():
                try:
                    c.infer(name, x)
                    served[0] += 1
                except Exception as exc:  # every request must be answered through the resizes
                    failures.append(exc)

    try:
        (worker,) = plane.cluster.workers
        name = single_threaded(server, worker)
        variant = plane.catalog.variants[name]
        t = threading.Thread(target=traffic)
        t.start()
        grown = run(server, plane.placement.resize(variant, worker, 2))
        assert (grown["was"], grown["instances"]) == (1, 2)
        assert instances(server, worker, name) == 2 and worker.loaded[name].instances == 2
        assert plane.latency.batching[(worker.name, name)][1] == 2  # the router's drain estimate knows
        before = served[0]
        assert wait_until(lambda: served[0] > before + 20, timeout=30)
        shrunk = run(server, plane.placement.resize(variant, worker, 1))
        assert (shrunk["was"], shrunk["instances"]) == (2, 1) and instances(server, worker, name) == 1
        run(server, plane.placement.resize(variant, worker, 2))
        before = served[0]
        assert wait_until(lambda: served[0] > before + 20, timeout=30)
        stop.set()
        t.join(30)
        assert not failures, failures[:3]
        # the target placement keeps the count: a restarted worker reloads two instances
        old_pid = worker.pid
        worker.kill()
        assert wait_until(lambda: worker.alive and worker.pid != old_pid and worker.hosts(name), timeout=60)
        assert instances(server, worker, name) == 2
        with pytest.raises(Exception, match="not loaded"):
            run(server, worker.resize("no-such-variant", 2))
        with pytest.raises(InvalidInput, match="need 3 cores; this worker has 2"):  # bounded by its cores
            run(server, worker.resize(name, 3))
        assert instances(server, worker, name) == 2  # unchanged, and it still serves
        with Client(server.url) as c:
            assert c.infer(name, x).outputs
    finally:
        stop.set()
        server.stop()


def test_under_a_ramp_the_controller_grows_instances_on_the_idle_core_then_shrinks_them(heavy_dir, tmp_path):
    settings = scaling_settings(
        heavy_dir, tmp_path / "d", cores_per_worker=2, max_workers=1, scale_down_s=3.0, idle_unload_s=600
    )
    server = BackgroundServer(settings).start()
    client = Client(server.url)
    try:
        plane = server.services
        (worker,) = plane.cluster.workers
        name = single_threaded(server, worker)
        variant, profile = plane.catalog.variants[name], plane.catalog.profiles[name]
        per_second = capacity_rps(profile, variant.max_batch) / 16  # requests of 16 rows
        stages = [(0.2 * per_second, 2.0), (1.5 * per_second, 6.0)]
        body = digits_body(16)
        results = asyncio.run(
            ramp(server.url, f"/v2/models/{name}/infer", body, ["Content-Type: application/json"], stages)
        )

        def log():
            return client.decisions(1000)

        grows = client.decisions(1000, kind="grow")  # a kind the decisions API filters on
        assert grows, [(d["kind"], d["reason"][:300]) for d in log()]
        assert "idle core(s)" in grows[0]["reason"] and "1 -> 2 instance(s)" in grows[0]["reason"], grows[0]
        assert not any(d["kind"] in ("replicate", "add_worker") for d in log())  # one worker, grown in place
        assert sum(r["errors"] for r in results) == 0, results
        # the load is over: the instance goes again after the hysteresis time
        if not wait_until(lambda: any(d["kind"] == "shrink" for d in log()), timeout=180):
            state = client.autoscale()["variants"].get(name)
            pytest.fail("no shrink:\n" + "\n".join(f"{d['kind']}: {d['reason']}" for d in log()) + f"\n{state}")
        assert instances(server, worker, name) == 1
        assert wait_until(lambda: client.autoscale()["variants"][name]["instances"] == [1], timeout=10)
    finally:
        client.close()
        server.stop()
