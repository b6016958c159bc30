"""State changes that used to race: unload vs load, worker removal vs placement, restarts vs
removal, concurrent registrations. Real workers, real server."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from infaas.app import BackgroundServer
from infaas.cluster import LocalCluster
from infaas.cluster.base import ReplicaState, WorkerState
from infaas.settings import Settings
from tests.conftest import copy_data_dir, wait_until


@pytest.fixture
def server(tmp_path, digits_data_dir):
    data = copy_data_dir(digits_data_dir, tmp_path / "d")
    srv = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, autoscale=False, profile_on_register=False)
    ).start()
    yield srv
    srv.stop()


def run(server, coro, timeout=60):
    return asyncio.run_coroutine_threadsafe(coro, server.loop).result(timeout)


def worker_has(server, worker, name) -> bool:
    """What the worker process itself reports as loaded."""
    return name in run(server, worker.stats())["variants"]


def test_an_unload_draining_while_a_load_of_the_same_variant_arrives_leaves_them_agreeing(server, digits_samples):
    """Was: the load answered 'already loaded' while the unload drained, then the unload finished:
    the frontend routed to a variant the worker had dropped (503 until a later unload)."""
    plane = server.services
    worker = plane.cluster.workers[0]
    name = next(n for n in worker.loaded_names() if n.startswith("digits-mlp."))
    spec = worker.loaded[name]
    x = {"input": np.repeat(digits_samples[0][:1].astype(np.float32), 16, axis=0)}

    async def race():
        traffic = [asyncio.ensure_future(worker.infer(name, x, 16)) for _ in range(50)]
        await asyncio.sleep(0)
        await asyncio.gather(worker.unload(name), worker.load(spec))
        await asyncio.gather(*traffic, return_exceptions=True)

    run(server, race())
    assert worker.hosts(name) and worker.replicas[name] is ReplicaState.READY
    assert worker_has(server, worker, name)  # the process agrees with the frontend
    assert run(server, worker.stats())["switch_ms"] == pytest.approx(0.5)  # short requests' GIL hops
    r = httpx.post(
        server.url + "/v2/models/digits-mlp/infer",
        timeout=30,
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": digits_samples[0][0].tolist()}]
        },
    )
    assert r.status_code == 200, r.text

    # and the other order: a load then an unload ends unloaded, on both sides
    async def other_order():
        await asyncio.gather(worker.load(spec), worker.unload(name))

    run(server, other_order())
    assert not worker.hosts(name) and name not in worker.replicas and not worker_has(server, worker, name)


def test_a_worker_that_was_given_a_variant_is_not_removed(tmp_path, digits_data_dir):
    """Was: remove_worker could stop a worker that received a variant moments before."""
    from infaas.registry import Registry

    registry = Registry.open(copy_data_dir(digits_data_dir, tmp_path / "d"))
    variant = next(v for v in registry.variants() if v.architecture == "digits-mlp")
    from infaas.cluster.base import LoadSpec

    spec = LoadSpec(variant.name, str(registry.models.path(variant.artifact_hash)), 1, 16)

    async def scenario():
        cluster = LocalCluster(2, 1)
        await cluster.start()
        try:
            w1 = cluster.workers[1]
            loading = asyncio.ensure_future(w1.load(spec))
            await asyncio.sleep(0)  # the load is on its way: the worker is assigned a variant
            assert await cluster.remove_worker("w1", only_if_empty=True) is False
            await loading
            assert await cluster.remove_worker("w1", only_if_empty=True) is False
            await w1.unload(variant.name)
            assert await cluster.remove_worker("w1", only_if_empty=True) is True
            assert [w.name for w in cluster.workers] == ["w0"] and w1.state is WorkerState.STOPPED
        finally:
            await cluster.stop()

    asyncio.run(scenario())
    registry.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if ppid == pid and b"infaas.worker" in cmd and state != "Z":
                out.append(int(entry.name))
    return out


def test_crashes_in_quick_succession_leave_exactly_one_process_serving(server, digits_samples):
    """Was: a restart whose reload failed leaked its process, and two restarts could run at once."""
    worker = server.services.cluster.workers[0]
    for _ in range(3):
        pid = worker.pid
        worker.kill()
        assert wait_until(lambda p=pid: worker.pid != p, timeout=10)  # killed again while restarting
    assert wait_until(lambda: worker.alive, timeout=30)
    assert worker.state is WorkerState.READY and worker.restarts >= 1
    assert wait_until(lambda: _children(os.getpid()) == [worker.pid], timeout=10), (_children(os.getpid()), worker.pid)
    r = httpx.post(
        server.url + "/v2/models/digits-mlp/infer",
        timeout=30,
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": digits_samples[0][0].tolist()}]
        },
    )
    assert r.status_code == 200


def test_removing_an_architecture_while_its_worker_restarts_leaves_no_zombie(server):
    """Was: removal skipped restarting workers, which then reloaded the removed variants."""
    worker = server.services.cluster.workers[0]
    name = next(n for n in worker.loaded_names() if n.startswith("digits-nb."))
    worker.kill()
    assert wait_until(lambda: worker.state is WorkerState.RESTARTING, timeout=10)
    r = httpx.delete(server.url + "/api/v1/architectures/digits-nb", timeout=30)
    assert r.status_code == 204
    assert wait_until(lambda: worker.alive, timeout=30)
    time.sleep(0.3)
    assert not worker.assigned(name) and not worker_has(server, worker, name)
    assert any(n.startswith("digits-mlp.") for n in worker.loaded_names())  # the others came back


def test_concurrent_registrations_of_one_name_exactly_one_wins(server, digits_models):
    """Was: both got 201 and overwrote each other."""
    model = next(m for m in digits_models if m.name == "digits-mlp")
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def register(i: int) -> None:
        barrier.wait()
        r = httpx.post(
            server.url + "/api/v1/architectures",
            timeout=60,
            data={"name": "twin", "task": "digits-classification", "accuracy": str(0.5 + i / 100)},
            files={"model": ("m.onnx", model.onnx)},
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409], statuses
    arch = httpx.get(server.url + "/api/v1/architectures/twin", timeout=10).json()
    assert len(arch["variants"]) == 1


def test_an_unreadable_reply_replaces_the_worker_instead_of_hanging_its_requests():
    """Was: an unexpected exception in the reader left the worker 'alive' and its requests hung to
    the timeout. Here the reader gets a corrupt frame (a header claiming 10^6 buffers)."""
    import struct
    import subprocess

    from infaas.cluster.local_worker import local_worker
    from infaas.errors import WorkerCrashed

    async def scenario():
        worker = local_worker("wx", (0,), restart=False)
        proc = subprocess.Popen(["sleep", "60"])  # stands for the worker process
        worker.transport.proc, worker.state = proc, WorkerState.READY
        waiting = asyncio.get_running_loop().create_future()
        worker.channel.pending[7] = waiting
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack("<II", 10, 10**6))
        await asyncio.wait_for(worker._read(reader, worker._incarnation), 10)
        assert proc.poll() is not None  # killed
        assert worker.state is WorkerState.STOPPED and "unreadable reply" in worker.last_exit
        with pytest.raises(WorkerCrashed):
            await waiting

    asyncio.run(scenario())


def test_a_variant_that_fails_to_reload_is_retried_until_it_is_back(tmp_path, digits_data_dir, digits_samples):
    """A restart no longer hinges on every variant reloading: the worker comes back with the others,
    the missing one stays in its target placement, and the controller retries it (with backoff,
    each attempt in the decision log) until it loads."""
    data = copy_data_dir(digits_data_dir, tmp_path / "d")
    server = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, profile_on_register=False, autoscale_interval_s=0.2)
    ).start()
    try:
        plane = server.services
        worker = plane.cluster.workers[0]
        name = next(n for n in worker.loaded_names() if n.startswith("digits-nb."))
        path = plane.registry.models.path(plane.catalog.variants[name].artifact_hash)
        good = path.read_bytes()
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # the store gets corrupted
        worker.kill()
        assert wait_until(lambda: worker.restarts == 1 and worker.alive, timeout=30)
        # still in the target placement; missing, or being retried by the controller right now
        assert not worker.hosts(name) and worker.assigned(name)
        assert worker.replicas.get(name) in (None, ReplicaState.LOADING)
        assert any(n.startswith("digits-mlp.") for n in worker.loaded_names())  # the others are back
        assert wait_until(
            lambda: any(d["kind"] == "error" and d.get("variant") == name for d in list(plane.decisions)), timeout=10
        )
        path.write_bytes(good)  # repaired
        assert wait_until(lambda: worker.hosts(name), timeout=15)
        assert any(d["kind"] == "reconcile" and d.get("variant") == name for d in list(plane.decisions))
        r = httpx.post(
            server.url + "/v2/models/digits-nb/infer",
            timeout=30,
            json={
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": digits_samples[0][0].tolist()}
                ]
            },
        )
        assert r.status_code == 200
    finally:
        server.stop()


def test_a_request_routed_by_a_stale_view_is_routed_again_not_refused(server, digits_samples):
    """A follower's view of a worker can be older than the leader's unload (it mirrors the actor every
    0.5 s); bench/cluster/failover saw 11 of 599 requests answered 503 'not loaded on this worker' that
    way. Here the process drops the variant behind its handle's back: the worker answers that it does
    not host it, nothing ran, and the router routes the request again instead of refusing it."""
    worker = server.services.cluster.workers[0]
    name = next(n for n in worker.loaded_names() if n.startswith("digits-mlp."))
    run(server, worker._call({"op": "unload", "variant": name}))  # the process only; the handle still routes it
    assert worker.hosts(name) and not worker_has(server, worker, name)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": digits_samples[0][0].tolist()}]}
    r = httpx.post(server.url + "/v2/models/digits-mlp/infer", timeout=30, json=body)
    assert r.status_code == 200, r.text
    # the handle learned: the variant left the view, and its target placement brought it back (a cold start)
    assert worker_has(server, worker, r.json()["parameters"]["variant"])
