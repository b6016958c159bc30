"""Hostile and malformed input: every case is a clear 4xx (or 413/503 at a limit), and the server
keeps serving. Each test here failed on the code before the overload/hostile-input issue."""

from __future__ import annotations

import asyncio
import io
import socket
import time
import zipfile
import zlib

import grpc
import httpx
import numpy as np
import orjson
import pytest

from infaas.app import BackgroundServer
from infaas.protocol.grpc_codec import SERVICE
from infaas.protocol.proto import kserve_v2_pb2 as pb
from infaas.settings import Settings
from tests.conftest import copy_data_dir, one_worker_settings

LIMIT = 1 << 20  # the strict server's body limit


def body(x: np.ndarray, **params) -> dict:
    req = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    if params:
        req["parameters"] = params
    return req


@pytest.fixture(scope="module")
def strict(tmp_path_factory, digits_data_dir):
    """A server with small limits: 1 MiB bodies (inference and management), 8 connections."""
    server = BackgroundServer(
        one_worker_settings(
            digits_data_dir,
            tmp_path_factory.mktemp("strict") / "d",
            max_request_bytes=LIMIT,
            max_management_bytes=LIMIT,
            max_connections=8,
        )
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(strict):
    with httpx.Client(base_url=strict.url, timeout=30) as c:
        yield c


def probe(http, samples) -> None:
    """The server still serves a valid request."""
    r = http.post("/v2/models/digits-mlp/infer", json=body(samples[0][:2]))
    assert r.status_code == 200, r.text


# ---- parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"latency_ms": "nan"}, "latency_ms"),
        ({"latency_ms": "inf"}, "latency_ms"),
        ({"latency_ms": "1e309"}, "latency_ms"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"min_accuracy": "nan"}, "min_accuracy"),
        ({"min_accuracy": 2}, "min_accuracy"),
        ({"max_cost": "Infinity"}, "max_cost"),
        ({"timeout": True}, "timeout"),
        ({"drop_late": "maybe"}, "drop_late"),
        ({"binary_data_output": 1}, "binary_data_output"),
        ({"allow_estimated": "no"}, "allow_estimated"),
    ],
)
def test_bad_parameters_are_a_400_that_names_them(http, digits_samples, params, named):
    r = http.post("/v2/models/digits-classification/infer", json=body(digits_samples[0][:1], **params))
    assert r.status_code == 400 and f"parameter '{named}'" in r.json()["error"], r.text


def test_a_nan_latency_does_not_poison_the_queue_for_valid_queries(http, digits_samples):
    """Was: the request hung to the timeout, the batching thread spun, and a valid query with a
    50 ms deadline sent meanwhile got a 503 (these variants are not profiled: the deadline comes
    from ``timeout``, as latency_ms needs a profile to predict from)."""
    x = digits_samples[0][:1]
    t0 = time.monotonic()
    bad = http.post("/v2/models/digits-mlp/infer", json=body(x, latency_ms="nan"))
    assert bad.status_code == 400 and time.monotonic() - t0 < 2
    good = http.post("/v2/models/digits-mlp/infer", json=body(x, timeout=50_000, min_accuracy=0.5))
    assert good.status_code == 200, good.text


def test_json_numbers_past_double_range_are_refused(http):
    raw = (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [1]}], '
        b'"parameters": {"latency_ms": 1e309}}'
    )
    r = http.post("/v2/models/digits-mlp/infer", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_false_means_false(http, digits_samples):
    """Was: Python truthiness, so the string "false" asked for binary outputs."""
    x = digits_samples[0][:2]
    r = http.post("/v2/models/digits-mlp/infer", json=body(x, binary_data_output="false"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    req = body(x)
    req["outputs"] = [{"name": "label", "parameters": {"binary_data": "false"}}]
    r = http.post("/v2/models/digits-mlp/infer", json=req)
    assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 2


# ---- limits ---------------------------------------------------------------------------------------
def _bomb(size: int, wbits: int) -> bytes:
    """``size`` zero bytes compressed (a few KB per MB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunk = b"\0" * (1 << 20)
    parts = [comp.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + comp.flush()


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)])
def test_a_compression_bomb_stops_at_the_limit(http, digits_samples, encoding, wbits):
    bomb = _bomb(64 << 20, wbits)  # 64 MiB inflated from ~64 KB, against a 1 MiB limit
    assert len(bomb) < LIMIT
    r = http.post(
        "/v2/models/digits-mlp/infer",
        content=bomb,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert r.status_code == 413 and "inflates past the limit" in r.json()["error"]
    truncated = zlib.compress(orjson.dumps(body(digits_samples[0][:1])))[:-6]
    r = http.post(
        "/v2/models/digits-mlp/infer",
        content=truncated,
        headers={"content-type": "application/json", "content-encoding": "deflate"},
    )
    assert r.status_code == 400 and "not valid deflate" in r.json()["error"]
    probe(http, digits_samples)


def test_management_uploads_are_bounded(http, digits_models, digits_samples):
    big = b"\0" * (LIMIT + 10)
    r = http.post(
        "/api/v1/architectures",
        data={"name": "huge", "task": "digits-classification"},
        files={"model": ("m.onnx", big)},
    )
    assert r.status_code == 413, r.text
    # a job .npz whose members claim to inflate past the limit
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        arr = io.BytesIO()
        np.save(arr, np.zeros((LIMIT // 4 + 1024, 1), np.float32))
        zf.writestr("input.npy", arr.getvalue())
    assert len(buf.getvalue()) < LIMIT
    r = http.post(
        "/api/v1/jobs?model=digits-mlp", content=buf.getvalue(), headers={"content-type": "application/octet-stream"}
    )
    assert r.status_code == 413 and "inflate" in r.json()["error"]
    r = http.post("/api/v1/architectures/digits-mlp/profile", content=b"[" * (1 << 17))
    assert r.status_code == 413
    probe(http, digits_samples)


def test_grpc_messages_past_the_limit_are_refused(strict, digits_samples):
    with grpc.insecure_channel(strict.grpc_url, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        infer = ch.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        req = pb.ModelInferRequest(model_name="digits-mlp")
        req.inputs.add(name="input", datatype="FP32", shape=[4096, 64])
        req.raw_input_contents.append(np.zeros((4096, 64), np.float32).tobytes())  # 1 MiB + framing
        req.raw_input_contents[0] += b"\0" * (2 * LIMIT)
        with pytest.raises(grpc.RpcError) as exc:
            infer(req, timeout=10)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = pb.ModelInferRequest(model_name="digits-mlp")
        ok.inputs.add(name="input", datatype="FP32", shape=[1, 64])
        ok.raw_input_contents.append(digits_samples[0][:1].astype(np.float32).tobytes())
        assert infer(ok, timeout=10).outputs[0].name


def test_signature_is_checked_before_any_tensor_is_decoded(http):
    """A wrong datatype is reported as such, before the (large, undecodable) data is touched."""
    n = 200_000
    req = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [n // 64, 64], "data": ["x"] * n}]}
    r = http.post("/v2/models/digits-mlp/infer", json=req)
    assert r.status_code == 400 and "datatype BYTES, expected FP32" in r.json()["error"]


def test_connections_past_the_cap_get_a_clear_503(strict, http, digits_samples):
    host, port = strict.settings.host, strict.settings.port
    hold = []
    for _ in range(7):  # requests that never finish their body: 7 of the 8 connections allowed
        s = socket.create_connection((host, port))
        s.sendall(b"POST /v2/models/digits-mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        hold.append(s)
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=strict.url, timeout=10) as fresh:
            r = fresh.get("/v2/health/live")
        assert r.status_code == 503
    finally:
        for s in hold:
            s.close()
    time.sleep(0.3)
    probe(http, digits_samples)


def test_unknown_model_names_never_become_metric_labels(strict, http):
    with grpc.insecure_channel(strict.grpc_url) as ch:
        infer = ch.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        for i in range(5):
            req = pb.ModelInferRequest(model_name=f"no-such-model-{i}")
            req.inputs.add(name="input", datatype="FP32", shape=[1, 64])
            req.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
            with pytest.raises(grpc.RpcError) as exc:
                infer(req, timeout=10)
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    text = http.get("/metrics").text
    assert "no-such-model" not in text


def test_grpc_typed_contents_out_of_range_are_invalid_argument():
    """Was: INTERNAL (REST gave 400)."""
    from infaas.errors import InvalidInput
    from infaas.protocol.grpc_codec import decode_infer
    from infaas.protocol.types import materialize

    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype="INT8", shape=[2])
    t.contents.int_contents.extend([1, 300])
    decoded = decode_infer(req, 1000)
    with pytest.raises(InvalidInput, match="do not fit datatype INT8"):
        materialize(decoded.inputs)


# ---- errors that escaped as 500 ---------------------------------------------------------------------
def test_leftover_requests_at_unload_are_a_503_not_a_500(strict, digits_samples):
    from infaas.errors import Unavailable

    plane = strict.services
    worker = plane.cluster.workers[0]
    name = next(n for n in worker.loaded_names() if n.startswith("digits-mlp."))
    x = {"input": np.repeat(digits_samples[0][:1].astype(np.float32), 16, axis=0)}

    async def race():
        calls = [asyncio.ensure_future(worker.infer(name, x, 16, drop_late=False)) for _ in range(200)]
        await asyncio.sleep(0)
        await worker.unload(name, drain_s=0)
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run_coroutine_threadsafe(race(), strict.loop).result(60)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed, "every request finished before the unload: nothing left over to check"
    assert all(isinstance(o, Unavailable) and o.status == 503 for o in failed), {type(o) for o in failed}
    asyncio.run_coroutine_threadsafe(plane.placement.ensure_loaded("digits-mlp"), strict.loop).result(60)


def test_a_corrupted_model_file_is_refused_at_load(tmp_path, digits_data_dir, digits_samples):
    """Artifacts are verified against their content hash before a worker loads them."""
    data = copy_data_dir(digits_data_dir, tmp_path / "d")
    from infaas.registry import Registry

    registry = Registry.open(data)
    variant = next(v for v in registry.variants() if v.architecture == "digits-nb")
    path = registry.models.path(variant.artifact_hash)
    registry.close()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the weights
    path.write_bytes(bytes(blob))
    server = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, autoscale=False, profile_on_register=False)
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post("/v2/models/digits-nb/infer", json=body(digits_samples[0][:1]))
            assert r.status_code == 503 and "does not match its hash" in r.json()["error"], r.text
            probe(c, digits_samples)  # the other architectures load and serve
    finally:
        server.stop()
