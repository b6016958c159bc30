"""Shared fixtures: real small models (digits zoo), real servers on ephemeral 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

# Ray clusters in tests live on one machine, on loopback only: with this Ray resolves "127.0.0.1" to itself
# (not to the machine's interface address), so nodes, listeners and drivers all bind and dial 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from infaas.app import BackgroundServer
from infaas.registry import Registry
from infaas.settings import Settings
from infaas.zoo import digits


@pytest.fixture(scope="session")
def digits_models() -> list[digits.ZooModel]:
    return digits.build()


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory, digits_models) -> Path:
    """A data directory with the four digits architectures registered (accuracy measured)."""
    path = tmp_path_factory.mktemp("digits-data")
    registry = Registry.open(path)
    for m in digits_models:
        registry.register(m.name, m.task, m.onnx, validation=m.validation, max_batch=16, threads=1)
    registry.close()
    return path


def wait_until(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def digits_body(rows: int, **parameters) -> bytes:
    """A KServe v2 JSON body of ``rows`` held-out digits (FP32 [rows, 64]), with request parameters."""
    import orjson

    x, _ = digits.sample_inputs(rows)
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    if parameters:
        doc["parameters"] = parameters
    return orjson.dumps(doc)


def scaling_settings(heavy_dir: Path, dst: Path, **overrides) -> Settings:
    """A copy of the heavy data directory served with autoscaling from one 1-core worker up to two."""
    base = {"port": 0, "workers": 1, "cores_per_worker": 1, "max_workers": 2, "profile_on_register": False}
    return Settings(data_dir=copy_data_dir(heavy_dir, dst), **{**base, **overrides})


def one_worker_settings(src: Path, dst: Path, **overrides) -> Settings:
    """A copy of a data directory served by one worker, REST and gRPC on free ports, no autoscaling
    and no profiling on registration (the tests' usual server), with ``overrides``."""
    base = {"port": 0, "grpc_port": 0, "workers": 1, "autoscale": False, "profile_on_register": False}
    return Settings(data_dir=copy_data_dir(src, dst), **{**base, **overrides})


def copy_data_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory, digits_data_dir):
    """A running server (uvicorn on a free port, one real worker process) over the digits zoo."""
    data = copy_data_dir(digits_data_dir, tmp_path_factory.mktemp("srv") / "data")
    server = BackgroundServer(Settings(data_dir=data, port=0, grpc_port=0, workers=1)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def digits_samples():
    return digits.sample_inputs(n=64)


@pytest.fixture(scope="session")
def digits_profiled_dir(tmp_path_factory, digits_data_dir) -> Path:
    """The digits data directory with every architecture's variants generated and profiled (quick)."""
    from infaas.profiler import profile_architecture

    path = copy_data_dir(digits_data_dir, tmp_path_factory.mktemp("digits-profiled") / "d")
    registry = Registry.open(path)
    for arch in registry.architectures():
        asyncio.run(profile_architecture(registry, arch.name, Settings(data_dir=path), quick=True))
    registry.close()
    return path


@pytest.fixture(scope="module")
def profiled_server(tmp_path_factory, digits_profiled_dir):
    """A server (one worker, no gRPC door) over a copy of the profiled digits zoo, one per module."""
    data = copy_data_dir(digits_profiled_dir, tmp_path_factory.mktemp("profiled") / "d")
    server = BackgroundServer(Settings(data_dir=data, port=0, workers=1, profile_on_register=False)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def heavy_dir(tmp_path_factory):
    """digits-conv (heavy on purpose: a few hundred to a few thousand rows/s on one core) registered and profiled (quick)."""
    path = tmp_path_factory.mktemp("heavy")
    digits.prepare_heavy(path)
    return path


def start_redis():
    """A real redis-server on a free 127.0.0.1 port (no persistence): (process, url). Skips without one."""
    import subprocess

    import redis

    from infaas.app import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")
    port = free_port()
    args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--protected-mode", "yes"]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    assert wait_until(lambda: _pings(client), 15), "redis-server did not start"
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url():
    """The session's Redis, stopped after the session."""
    proc, url = start_redis()
    yield url
    proc.terminate()
    proc.wait(10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def fresh_redis(redis_url):
    """The session's Redis, emptied before the test."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def assert_selection_and_admission_agree(server, name: str) -> tuple[float, float]:
    """Load variant ``name`` alone on the server's first worker, idle, and check that the selection's
    prediction for one row there is the worker's admission estimate, the learned correction
    included (issue 33); returns both (ms)."""
    from infaas.policy import predict_ms

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, server.loop).result(120)

    plane = server.services
    worker = plane.cluster.workers[0]
    for other in set(worker.loaded_names()) - {name}:
        run(worker.unload(other))
    run(plane.placement.load(plane.catalog.variants[name], worker))
    _, in_flight, batch, instances, _overhead, *rest = plane.latency.slot(
        worker.name, name, {name: 0}, plane.catalog.profiles, plane.catalog.variants, now=time.monotonic()
    )
    # the serving path's learned overhead (the residual outside the worker) left out: the worker's
    # deadline already counts the time spent before it
    selected = predict_ms(
        plane.catalog.profiles[name], plane.catalog.variants[name].max_batch, 1, in_flight, batch, instances, 0.0, *rest
    )
    admitted = run(worker.stats())["variants"][name]["admit_ms"]
    assert admitted == pytest.approx(selected, rel=0.01, abs=1e-3), (name, selected, admitted)
    return selected, admitted
