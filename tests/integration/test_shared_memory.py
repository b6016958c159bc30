"""Triton's system shared-memory extension, driven by tritonclient's own ``shared_memory`` utilities over
HTTP and gRPC: register, infer with inputs and outputs in regions, status, unregister; every bad input
gets its error and the server keeps serving; a worker killed mid-request leaves nothing mapped."""

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from infaas.app import BackgroundServer
from infaas.settings import Settings
from tests.conftest import copy_data_dir, wait_until

PROTOCOLS = ["http", "grpc"]
ROWS = 8


class Regions:
    """The client's side: shared-memory objects it created (each unlinked at the end)."""

    def __init__(self, tag: str) -> None:
        self.tag = f"{tag}_{os.getpid()}"
        self.handles: list = []

    def create(self, name: str, size: int):
        handle = shm.create_shared_memory_region(f"{name}_{self.tag}", f"/{name}_{self.tag}", size)
        self.handles.append(handle)
        return handle, f"{name}_{self.tag}", f"/{name}_{self.tag}"

    def close(self) -> None:
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)


@pytest.fixture(scope="module")
def server(tmp_path_factory, digits_data_dir):
    data = copy_data_dir(digits_data_dir, tmp_path_factory.mktemp("shm") / "data")
    srv = BackgroundServer(Settings(data_dir=data, port=0, grpc_port=0, workers=1, request_timeout_s=30)).start()
    yield srv
    srv.stop()


@pytest.fixture(params=PROTOCOLS)
def client(request, server):
    lib = grpcclient if request.param == "grpc" else httpclient
    url = server.grpc_url if request.param == "grpc" else server.url.removeprefix("http://")
    c = lib.InferenceServerClient(url)
    c.lib, c.protocol = lib, request.param
    regions = Regions(request.param)
    c.regions = regions
    yield c
    c.unregister_system_shared_memory()
    c.close()
    regions.close()


def mapped(pid: int, key: str) -> int:
    """How many mappings of the shared-memory object ``key`` process ``pid`` holds (this test process is
    the client too: tritonclient maps each object it creates once)."""
    with open(f"/proc/{pid}/maps") as f:
        return sum(line.rstrip().endswith("/dev/shm/" + key.lstrip("/")) for line in f)


def status(c) -> dict:
    raw = c.get_system_shared_memory_status(**({"as_json": True} if c.protocol == "grpc" else {}))
    rows = list(raw.get("regions", {}).values()) if c.protocol == "grpc" else raw
    return {r["name"]: r for r in rows}


def test_inputs_and_outputs_in_regions_match_plain_inference(client, server, digits_samples):
    x = np.ascontiguousarray(digits_samples[0][:ROWS], dtype=np.float32)
    lib = client.lib
    plain = client.infer("digits-logreg", [_input(lib, x)])
    in_h, in_name, in_key = client.regions.create("in", x.nbytes + 64)
    out_h, out_name, out_key = client.regions.create("out", 4096)
    shm.set_shared_memory_region(in_h, [x], offset=64)  # at an offset in the object, as a client may
    client.register_system_shared_memory(in_name, in_key, x.nbytes + 64)
    client.register_system_shared_memory(out_name, out_key, 4096)
    listed = status(client)
    assert {in_name, out_name} <= set(listed) and int(listed[in_name]["byte_size"]) == x.nbytes + 64

    inp = lib.InferInput("input", list(x.shape), "FP32")
    inp.set_shared_memory(in_name, x.nbytes, offset=64)
    probs = lib.InferRequestedOutput("probabilities")
    probs.set_shared_memory(out_name, ROWS * 10 * 4)
    label = lib.InferRequestedOutput("label")
    label.set_shared_memory(out_name, ROWS * 8, offset=2048)
    result = client.infer("digits-logreg", [inp], outputs=[probs, label])

    # the answer names the outputs and their shapes, with no data (as Triton answers)
    meta = result.get_output("probabilities")  # gRPC: the message (tritonclient's as_json returns None here)
    if client.protocol == "grpc":
        assert list(meta.shape) == [ROWS, 10] and not meta.parameters
        assert list(result.get_response().raw_output_contents) == [b"", b""]
    else:
        assert meta == {"name": "probabilities", "datatype": "FP32", "shape": [ROWS, 10]}
    got = shm.get_contents_as_numpy(out_h, np.float32, [ROWS, 10])
    np.testing.assert_allclose(got, plain.as_numpy("probabilities"), rtol=1e-6)
    labels = shm.get_contents_as_numpy(out_h, np.int64, [ROWS], offset=2048)
    np.testing.assert_array_equal(labels, plain.as_numpy("label"))
    worker = server.services.cluster.workers[0]
    assert mapped(worker.pid, in_key) == 1  # the worker read it in place, mapped once
    assert mapped(os.getpid(), in_key) == 2  # the client's mapping and the server's
    client.unregister_system_shared_memory(in_name)
    assert in_name not in status(client) and out_name in status(client)
    assert mapped(os.getpid(), in_key) == 1  # unregistering unmapped it in the server
    assert wait_until(lambda: not mapped(worker.pid, in_key), timeout=5), "the worker keeps the client's memory"
    assert mapped(worker.pid, out_key) == 1  # still registered: still mapped


def _input(lib, x, region=None, size=None, offset=0, datatype="FP32"):
    inp = lib.InferInput("input", list(x.shape), datatype)
    if region is None:
        inp.set_data_from_numpy(x)
    else:
        inp.set_shared_memory(region, x.nbytes if size is None else size, offset=offset)
    return inp


def test_bad_inputs_get_their_error_and_the_server_keeps_serving(client, digits_samples):
    x = np.ascontiguousarray(digits_samples[0][:2], dtype=np.float32)
    lib = client.lib
    h, name, key = client.regions.create("bad", x.nbytes)
    shm.set_shared_memory_region(h, [x])

    def refused(fragment, call):
        with pytest.raises(InferenceServerException) as exc:
            call()
        assert fragment in str(exc.value), str(exc.value)

    refused("no shared-memory object", lambda: client.register_system_shared_memory("r", "/no_such_key_x", 16))
    refused("does not name an object", lambda: client.register_system_shared_memory("r", "/../etc/passwd", 16))
    refused("does not name an object", lambda: client.register_system_shared_memory("r", "/a/b", 16))
    refused("fewer than", lambda: client.register_system_shared_memory("r", key, x.nbytes + 1))
    client.register_system_shared_memory(name, key, x.nbytes)
    refused("already registered", lambda: client.register_system_shared_memory(name, key, x.nbytes))
    refused("no shared-memory region named", lambda: client.infer("digits-mlp", [_input(lib, x, "nope")]))
    refused("runs past", lambda: client.infer("digits-mlp", [_input(lib, x, name, offset=8)]))
    refused("bytes", lambda: client.infer("digits-mlp", [_input(lib, x[:1], name, size=x.nbytes)]))
    small = lib.InferRequestedOutput("probabilities")
    small.set_shared_memory(name, 8)
    refused("does not fit", lambda: client.infer("digits-mlp", [_input(lib, x)], outputs=[small]))
    refused("not supported", lambda: client.register_cuda_shared_memory("c", b"\0" * 64, 0, 64))
    # the server still serves, in and out of shared memory
    ok = client.infer("digits-mlp", [_input(lib, x, name)]).as_numpy("label")
    assert ok.shape == (2,)
    assert client.is_server_live()


def test_a_local_worker_reads_and_writes_the_region_in_place(server, digits_samples):
    """Only a span travels to the worker process: it reads the input where the client wrote it and
    writes the output there, and its reply carries where, not the tensor."""
    from infaas.protocol.shm import Shared, ShmTensor, Span

    regions = Regions("inplace")
    try:
        x = np.ascontiguousarray(digits_samples[0][:4], dtype=np.float32)
        h, _, key = regions.create("io", 8192)
        shm.set_shared_memory_region(h, [x])
        ino = os.stat("/dev/shm/" + key.lstrip("/")).st_ino
        worker = server.services.cluster.workers[0]
        variant = next(v for v in worker.loaded_names() if v.startswith("digits-logreg"))
        sent = Shared(
            {"input": ShmTensor(Span(key, ino, 0, x.nbytes), x.dtype.str, x.shape)},
            {"probabilities": Span(key, ino, 4096, 4096)},
        )
        decoy = np.zeros_like(x)  # what the frames would carry: the worker must not read it

        def run(inputs, shared=None):
            call = worker.infer(variant, inputs, 4, shm=shared)
            return asyncio.run_coroutine_threadsafe(call, server.loop).result(30).outputs

        outputs = run({"input": decoy}, sent)
        placed = outputs["probabilities"]
        assert isinstance(placed, ShmTensor) and placed.span.start == 4096 and placed.shape == (4, 10)
        got = shm.get_contents_as_numpy(h, np.float32, [4, 10], offset=4096)
        np.testing.assert_allclose(got, run({"input": x})["probabilities"], rtol=1e-6)
        assert not np.allclose(got, run({"input": decoy})["probabilities"])
    finally:
        regions.close()


def test_rest_shapes_of_bad_bodies(server):
    base = server.url + "/v2/systemsharedmemory"
    r = requests.post(base + "/region/x/register", data=b"not json", timeout=10)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = requests.post(base + "/region/x/register", json={"key": "/k", "byte_size": -1}, timeout=10)
    assert r.status_code == 400 and "non-negative" in r.json()["error"]
    r = requests.get(base + "/region/x/status", timeout=10)
    assert r.status_code == 400 and "no shared-memory region named 'x'" in r.json()["error"]
    assert requests.get(server.url + "/v2", timeout=10).json()["extensions"].count("system_shared_memory") == 1


@pytest.mark.slow
def test_worker_killed_mid_request_leaves_no_region_mapped(server, digits_samples):
    c = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    regions = Regions("kill")
    x = np.ascontiguousarray(digits_samples[0][:4], dtype=np.float32)
    h, name, key = regions.create("k", x.nbytes)
    shm.set_shared_memory_region(h, [x])
    c.register_system_shared_memory(name, key, x.nbytes)
    worker = server.services.cluster.workers[0]
    try:
        with ThreadPoolExecutor(2) as pool:
            os.kill(worker.pid, signal.SIGSTOP)  # frozen: the request is surely in flight when it dies
            body = {  # the plain REST body (tritonclient's HTTP client cannot be called from a thread)
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "parameters": {"shared_memory_region": name, "shared_memory_byte_size": x.nbytes},
                    }
                ]
            }
            pending = pool.submit(requests.post, server.url + "/v2/models/digits-mlp/infer", json=body, timeout=60)
            assert wait_until(lambda: worker.outstanding() >= 1, timeout=10)
            old = worker.pid
            worker.kill()
            answer = pending.result(timeout=30)
            assert answer.status_code >= 500 and "worker" in answer.json()["error"], answer.text
        assert wait_until(lambda: worker.pid not in (None, old) and worker.loaded_names(), timeout=60)
        time.sleep(0.2)
        assert c.infer("digits-mlp", [_input(httpclient, x, name)]).as_numpy("label").shape == (4,)
        c.unregister_system_shared_memory(name)
        assert mapped(os.getpid(), key) == 1  # the client's own
        assert wait_until(lambda: not mapped(worker.pid, key), timeout=5)
    finally:
        c.unregister_system_shared_memory()
        c.close()
        regions.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_example_client_runs_unchanged(server, protocol):
    """examples/shm_client.py, tritonclient alone, as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "shm_client.py"
    url = server.grpc_url if protocol == "grpc" else server.url.removeprefix("http://")
    args = [sys.executable, str(example), "--url", url] + (["--grpc"] if protocol == "grpc" else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "probabilities: [4, 10] float32 from shared memory, same as the plain answer: True" in out.stdout
    assert "label: [4] int64 from shared memory, same as the plain answer: True" in out.stdout
    assert "regions registered: 2" in out.stdout
