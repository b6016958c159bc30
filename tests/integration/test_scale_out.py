"""Scale-out: workers as Ray actors on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: several
raylets on this machine), Redis shared by two frontends, one controller elected among them.

One Ray cluster for the whole module (Ray takes seconds and about 1 GiB to start)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from infaas.app import BackgroundServer, free_port
from infaas.client import Client, InfaasClientError
from infaas.settings import Settings
from tests.conftest import copy_data_dir, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]
ray = pytest.importorskip("ray")
os.environ["RAY_AUTH_MODE"] = "disabled"

# Ray notices a dead node from missed health checks: every 0.5 s, three misses (default: 3 s x 5)
FAST_DEATH = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
    "health_check_timeout_ms": 500,
}


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",  # no test traffic leaves loopback
            "include_dashboard": False,
            "_system_config": FAST_DEATH,
        },
    )
    nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="infaas-test", log_to_driver=False, _node_ip_address="127.0.0.1")
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def _node_of(worker) -> str:
    return worker.transport.node_id


def test_workers_spread_over_nodes_and_serve_a_model_less_query(
    ray_cluster, tmp_path, digits_profiled_dir, digits_samples
):
    cluster, _ = ray_cluster
    data = copy_data_dir(digits_profiled_dir, tmp_path / "data")
    settings = Settings(
        data_dir=data,
        port=0,
        workers=2,
        cores_per_worker=1,
        cluster="ray",
        ray_address=cluster.address,
        ray_namespace="spread",
        autoscale=False,
    )
    with BackgroundServer(settings) as server:
        dp = server.services
        assert len(dp.cluster.workers) == 2
        nodes = {w.transport.node_id for w in dp.cluster.workers}
        assert len(nodes) == 2, "each 1-CPU actor needs a node of its own (the head has no CPU)"
        assert all(w.kind is not None and w.kind.id == dp.catalog.kind.id for w in dp.cluster.workers)
        x, _ = digits_samples
        with Client(server.url) as c:
            out = c.infer("digits-classification", x[:4], latency_ms=50, min_accuracy=0.9)
            assert out.outputs["label"].shape == (4,)
            assert out.parameters["worker"] in {"w0", "w1"} and "reason" in out.parameters
            info = c.workers()
            assert {w["node"] for w in info} == {cluster.head_node.node_ip_address} and all(
                w["state"] == "ready" for w in info
            )
        # the actors are named, detached, in the deployment's namespace; stopping the only frontend ends them
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "spread"}
        assert names == {"infaas-w0", "infaas-w1"}
    assert wait_until(
        lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "spread"], 20
    )


class _Canary:
    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_the_actor_wire_refuses_strangers_and_pickles_and_keeps_serving(
    ray_cluster, tmp_path, digits_profiled_dir, digits_samples
):
    from infaas.protocol import worker_wire
    from infaas.protocol.peer_wire import WireRefused, connect

    cluster, _ = ray_cluster
    settings = Settings(
        data_dir=copy_data_dir(digits_profiled_dir, tmp_path / "data"),
        port=0,
        workers=1,
        cluster="ray",
        ray_address=cluster.address,
        ray_namespace="wire",
        ray_node_ip="127.0.0.1",
        node_host="127.0.0.1",
        autoscale=False,
    )
    canary = tmp_path / "canary"
    with BackgroundServer(settings) as server:
        worker = server.services.cluster.workers[0]
        host, port = worker.transport.address
        assert host == "127.0.0.1"
        secret = server.services.registry.store.get("secret", "wire")["secret"].encode()
        evil = b"".join(bytes(p) for p in worker_wire.encode({"op": "infer", "x": _Canary(canary)}))

        async def attack() -> None:
            with pytest.raises(WireRefused):
                await connect(host, port, b"not the secret", 5.0)
            reader, writer = await connect(host, port, secret, 5.0)  # an insider sending a pickle
            writer.write(evil)
            assert await asyncio.wait_for(reader.read(), 10) == b"", "the actor must hang up"
            writer.close()

        asyncio.run(attack())
        counts = ray.get(worker.transport.actor.wire_stats.remote())
        assert counts["refused"] >= 1 and counts["rejected"] == 1
        x, _ = digits_samples
        with Client(server.url) as c:  # the frontend's own connection was never disturbed
            assert c.infer("digits-classification", x[:2]).outputs["label"].shape == (2,)
    assert not canary.exists()


def test_profiles_are_measured_on_a_worker_node_by_actors_that_go_away(ray_cluster, tmp_path, digits_models):
    """Under Ray the profiler measures in actors on a worker's node (that node's hardware), not in
    processes on the frontend's machine; the model file reaches them as a load's does."""
    cluster, _ = ray_cluster
    settings = Settings(
        data_dir=tmp_path / "data",
        port=0,
        workers=1,
        cluster="ray",
        ray_address=cluster.address,
        ray_namespace="measure",
        autoscale=False,
    )
    m = next(m for m in digits_models if m.name == "digits-logreg")
    with BackgroundServer(settings) as server:
        worker = server.services.cluster.workers[0]
        with Client(server.url, timeout=60) as c:
            c.register(m.name, m.task, m.onnx, validation=m.validation, max_batch=8)
            assert wait_until(lambda: c.profiling(m.name)["finished"] is not None, 240), c.profiling(m.name)
            assert c.profiling(m.name)["error"] is None, c.profiling(m.name)
        profiles = [
            server.services.registry.profile(v.name, worker.kind.id) for v in server.services.registry.variants(m.name)
        ]
        measured = [p for p in profiles if p is not None]
        assert measured and all(p.node == worker.transport.node_ip for p in measured), [
            (p.variant, p.node) for p in measured
        ]
        assert wait_until(lambda: not [a for a in _named("measure") if "profiler" in a], 20), _named("measure")


def _named(namespace: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace]


def test_a_killed_actor_fails_its_requests_and_is_replaced(ray_cluster, tmp_path, digits_profiled_dir, digits_samples):
    cluster, _ = ray_cluster
    data = copy_data_dir(digits_profiled_dir, tmp_path / "data")
    settings = Settings(
        data_dir=data,
        port=0,
        workers=1,
        cores_per_worker=1,
        cluster="ray",
        ray_address=cluster.address,
        ray_namespace="kill",
        autoscale=True,
        min_workers=1,
    )
    with BackgroundServer(settings) as server:
        worker = server.services.cluster.workers[0]
        before = set(worker.loaded_names())
        old_pid = worker.pid
        x, _ = digits_samples
        with Client(server.url) as c:
            c.infer("digits-classification", x[:1])
            worker.kill()
            assert wait_until(
                lambda: worker.pid != old_pid and worker.alive and before <= set(worker.loaded_names()), 30
            ), f"not replaced: {worker.state}, {worker.last_exit}"
            assert c.infer("digits-classification", x[:1]).parameters["worker"] == "w0"
            assert worker.restarts == 1


def _load(url: str, stop: threading.Event, results: list, x: np.ndarray) -> None:
    with Client(url, timeout=15) as c:
        while not stop.is_set():
            t = time.monotonic()
            try:
                c.infer("digits-classification", x[:2], parameters={"timeout": 3_000_000})  # µs, as Triton
                results.append((t, time.monotonic(), "ok"))
            except InfaasClientError as exc:  # a clear error: a status and a message
                results.append((t, time.monotonic(), f"{exc.status}"))


def test_a_node_removed_under_load_fails_clearly_and_service_returns(
    ray_cluster, tmp_path, digits_profiled_dir, digits_samples
):
    """Two workers on two nodes, a spare node; the node of the worker serving the queries is removed
    under load: every request gets an answer or a clear error within its deadline, answers come back
    within 10 s, and the controller places the lost worker again on the spare node."""
    cluster, nodes = ray_cluster
    data = copy_data_dir(digits_profiled_dir, tmp_path / "data")
    settings = Settings(
        data_dir=data,
        port=0,
        workers=2,
        cores_per_worker=1,
        cluster="ray",
        ray_address=cluster.address,
        ray_namespace="nodeloss",
        autoscale=True,
        min_workers=2,
        max_workers=2,
    )
    x, _ = digits_samples
    with BackgroundServer(settings) as server:
        rc = server.services.cluster
        with Client(server.url) as c:
            victim = (
                rc.workers[0] if c.infer("digits-classification", x[:1]).parameters["worker"] == "w0" else rc.workers[1]
            )
        node = next(n for n in nodes if n.node_id == victim.transport.node_id)
        stop, results = threading.Event(), []
        threads = [threading.Thread(target=_load, args=(server.url, stop, results, x)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        removed_at = time.monotonic()
        cluster.remove_node(node, allow_graceful=False)
        replaced = wait_until(lambda: victim.alive and victim.transport.node_id != node.node_id, 60)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a request hung"
        assert replaced, f"the lost worker was not placed again: {victim.state} ({victim.last_exit})"
        assert all(end - start < 3.0 + 1.5 for start, end, _ in results), "a request outlived its deadline"
        failed = [r for r in results if r[2] != "ok"]
        assert all(r[2] in {"500", "503", "504", "429"} for r in failed), failed
        after = [r for r in results if r[0] > removed_at and r[2] == "ok"]
        assert after and after[0][1] - removed_at < 10.0, "no answer within 10 s of the node's loss"
        assert (
            any(d["kind"] == "error" or "died" in d.get("reason", "") for d in server.services.decisions) or rc.deaths
        ), "the death was not recorded"
        nodes.remove(node)
        nodes.append(cluster.add_node(num_cpus=1))  # the next test's spare


# ---- two frontends, one Redis, one Ray cluster --------------------------------------------------------
def _frontend(port: int, data, redis_url: str, address: str, namespace: str, log) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "INFAAS_LEASE_S": "2", "INFAAS_PROFILE_ON_REGISTER": "0"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infaas.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--cluster",
            "ray",
            "--ray-address",
            address,
            "--ray-node-ip",
            "127.0.0.1",
            "--store",
            redis_url,
            "--workers",
            "1",
            "--cores-per-worker",
            "1",
        ],
        env={**env, "INFAAS_RAY_NAMESPACE": namespace},
        stdout=log,
        stderr=log,
    )


def _up(url: str) -> bool:
    try:
        with Client(url, timeout=2) as c:
            return c.ready()
    except Exception:
        return False


def test_two_frontends_share_models_workers_and_one_controller(
    ray_cluster, tmp_path, fresh_redis, digits_models, digits_samples
):
    cluster, _ = ray_cluster
    ports = [free_port(), free_port()]
    logs = [open(tmp_path / f"frontend{i}.log", "wb") for i in range(2)]  # noqa: SIM115 (closed below)
    procs = [_frontend(ports[0], tmp_path / "a", fresh_redis, cluster.address, "two", logs[0])]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        assert wait_until(lambda: _up(urls[0]), 90), (tmp_path / "frontend0.log").read_text()[-3000:]
        procs.append(_frontend(ports[1], tmp_path / "b", fresh_redis, cluster.address, "two", logs[1]))
        assert wait_until(lambda: _up(urls[1]), 90), (tmp_path / "frontend1.log").read_text()[-3000:]
        a, b = Client(urls[0], timeout=30), Client(urls[1], timeout=30)
        fa, fb = a.frontends(), b.frontends()
        assert fa["leader"] and not fb["leader"], (fa, fb)
        assert len(fb["frontends"]) == 2 and fb["lease"]["holder"] == fa["frontend"]
        # one worker, started by the leader, seen by both
        assert [w["name"] for w in a.workers()] == [w["name"] for w in b.workers()] == ["w0"]

        m = next(m for m in digits_models if m.name == "digits-mlp")
        a.register(m.name, m.task, m.onnx, validation=m.validation, max_batch=16)
        x, _ = digits_samples
        # b has its own data directory: the model file reaches it (and the worker) through Redis and Ray
        assert wait_until(lambda: "digits-mlp" in [r["name"] for r in b.architectures()], 20)
        assert wait_until(lambda: _answers(b, x), 30)
        out = b.infer("digits-classification", x[:3])
        assert out.parameters["architecture"] == "digits-mlp" and out.outputs["label"].shape == (3,)
        # the leader's control decisions are readable from the other frontend (through the store)
        assert wait_until(
            lambda: any(d.get("frontend") == fa["frontend"] for d in b.decisions(100, kind="register,load")), 10
        ), b.decisions(100)

        # the leader dies without a word: the other frontend takes the lease (a larger token) within seconds
        token = fa["token"]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: b.frontends()["leader"], 15), b.frontends()
        took = time.monotonic() - killed
        fb = b.frontends()
        assert fb["token"] > token and took < 2 * 2 + 2, (fb, took)
        assert b.autoscale().get("ticks", 0) >= 0 and b.autoscale().get("enabled", True)
        # the workers outlived the frontend that started them, and serve on
        assert b.infer("digits-classification", x[:2]).parameters["worker"] == "w0"
        assert any(d["kind"] == "leader" for d in b.decisions())
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in logs:
            f.close()
    # the last frontend out stops the workers
    assert wait_until(
        lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "two"], 20
    )


def _answers(client: Client, x: np.ndarray) -> bool:
    try:
        client.infer("digits-classification", x[:1])
        return True
    except InfaasClientError:
        return False
