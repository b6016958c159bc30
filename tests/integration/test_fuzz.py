"""Fuzzing: schemathesis against the management API's published OpenAPI schema, and hypothesis-made
KServe v2 inference requests over REST JSON, REST binary and gRPC. Whatever comes in: no 5xx but
503/429 with a reason, no answer past the deadline, the server still serves a valid probe after
every case, and its memory stays bounded. Example counts are bounded so CI runs them."""

from __future__ import annotations

import math
import time
import zlib

import grpc
import httpx
import numpy as np
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    status_code_conformance,
)

from infaas.app import BackgroundServer
from infaas.frontend.openapi import openapi_schema
from infaas.protocol.grpc_codec import SERVICE
from infaas.protocol.proto import kserve_v2_pb2 as pb
from tests.conftest import one_worker_settings

pytestmark = pytest.mark.slow

ANSWER_S = 5.0  # the fuzzed requests' deadline: every answer comes within it (plus slack)
ALLOWED = {200, 201, 202, 204, 400, 401, 404, 409, 413, 429, 503}


@pytest.fixture(scope="module")
def target(tmp_path_factory, digits_data_dir):
    server = BackgroundServer(
        one_worker_settings(
            digits_data_dir,
            tmp_path_factory.mktemp("fuzz") / "d",
            default_timeout_s=ANSWER_S,
            max_request_bytes=4 << 20,
            max_management_bytes=4 << 20,
            max_request_elements=1 << 20,
        )
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(target):
    with httpx.Client(base_url=target.url, timeout=ANSWER_S + 10) as c:
        yield c


def probe(http) -> None:
    x = np.arange(64, dtype=np.float32).reshape(1, 64) % 16
    r = http.post(
        "/v2/models/digits-mlp/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}]},
    )
    assert r.status_code == 200, r.text


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def check_answer(status: int, body: bytes, took: float) -> None:
    assert status in ALLOWED, (status, body[:300])
    if status >= 400:
        error = orjson.loads(body)["error"]
        assert isinstance(error, str) and error
    assert took < ANSWER_S + 2.0, f"answered after {took:.1f} s"


# ---- schemathesis: the management API -------------------------------------------------------------
def management_schema():
    doc = openapi_schema()
    paths = {p: ops for p, ops in doc["paths"].items() if p.startswith("/api/v1")}
    return schemathesis.openapi.from_dict({**doc, "paths": paths})


schema = management_schema()


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_management_api_fuzzed_against_its_schema(case, target, http):
    t0 = time.monotonic()
    response = case.call(base_url=target.url, timeout=ANSWER_S + 10)
    took = time.monotonic() - t0
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance])
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
    assert took < ANSWER_S + 2.0
    probe(http)


# ---- hypothesis: KServe v2 inference ------------------------------------------------------------
DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "FP99", "", 7]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-1", "50", "true", "", "x" * 50]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
PARAMS = st.dictionaries(
    st.sampled_from(
        [
            "latency_ms",
            "min_accuracy",
            "max_cost",
            "timeout",
            "drop_late",
            "binary_data_output",
            "allow_estimated",
            "other",
        ]
    ),
    NUMBERS,
    max_size=4,
)
SHAPES = st.one_of(
    st.lists(st.integers(-2, 70), min_size=0, max_size=3),
    st.just([1, 64]),
    st.just([3, 64]),
    st.just([100_000, 100_000]),
    st.just("1,64"),
)
MODELS = st.sampled_from(
    ["digits-mlp", "digits-classification", "digits-nb", "nope", "digits-mlp/versions/1", "digits-mlp/versions/zzz"]
)


def json_safe(value):
    """What orjson can write (it has no NaN/Inf/huge ints): as strings, which the server must refuse."""
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and abs(value) >= 2**63:
        return str(value)
    return value


@st.composite
def requests(draw):
    shape = draw(SHAPES)
    datatype = draw(st.sampled_from(DATATYPES))
    count = math.prod(shape) if isinstance(shape, list) and all(d >= 0 for d in shape) else 4
    count = min(count, 300)
    data = draw(
        st.one_of(
            st.just([i % 16 for i in range(count)]),
            st.lists(NUMBERS.map(json_safe), max_size=5),
            st.just([["a"]] * 2),
            st.just("abc"),
        )
    )
    params = {k: json_safe(v) for k, v in draw(PARAMS).items()}
    return (
        draw(MODELS),
        {"name": draw(st.sampled_from(["input", "x", ""])), "datatype": datatype, "shape": shape, "data": data},
        params,
    )


@given(req=requests(), mode=st.sampled_from(["json", "binary", "gzip", "truncated", "oversized"]))
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_rest_inference_fuzzed(req, mode, target, http):
    model, tensor, params = req
    headers = {"content-type": "application/json"}
    doc = {"inputs": [tensor], "parameters": params}
    if mode in ("binary", "truncated"):
        raw = np.asarray(tensor["data"] if isinstance(tensor["data"], list) else [0], dtype=object)
        blob = np.array(
            [v if isinstance(v, int | float) and abs(v) < 1e30 else 0 for v in raw.ravel()[:300]], np.float32
        ).tobytes()
        tensor = {k: v for k, v in tensor.items() if k != "data"}
        tensor["parameters"] = {"binary_data_size": len(blob)}
        header = orjson.dumps({"inputs": [tensor], "parameters": params})
        body = header + (blob[: len(blob) // 2] if mode == "truncated" else blob)
        headers = {"inference-header-content-length": str(len(header))}
    else:
        body = orjson.dumps(doc)
    if mode == "gzip":
        body = zlib.compress(body)
        headers["content-encoding"] = "deflate"
    if mode == "oversized":
        body = body + b" " * (5 << 20)
    t0 = time.monotonic()
    r = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    check_answer(r.status_code, r.content if r.status_code >= 400 else b"", time.monotonic() - t0)
    probe(http)


GRPC_PARAMS = st.dictionaries(
    st.sampled_from(["latency_ms", "min_accuracy", "timeout", "drop_late", "x"]),
    st.one_of(st.floats(allow_nan=True), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.text(max_size=8)),
    max_size=3,
)


@given(req=requests(), params=GRPC_PARAMS, raw=st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_grpc_inference_fuzzed(req, params, raw, target, http):
    model, tensor, _ = req
    msg = pb.ModelInferRequest(model_name=model.split("/")[0])
    if "/versions/" in model:
        msg.model_version = model.split("/")[-1]
    for key, value in params.items():
        p = msg.parameters[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = value
    shape = tensor["shape"] if isinstance(tensor["shape"], list) else [1]
    t = msg.inputs.add(name=tensor["name"], datatype=str(tensor["datatype"]), shape=[max(-(2**62), d) for d in shape])
    count = min(300, math.prod(shape)) if all(d >= 0 for d in shape) else 3
    if raw:
        msg.raw_input_contents.append(np.zeros(max(0, count), np.float32).tobytes()[: 4 * count - (count % 3)])
    else:
        t.contents.fp32_contents.extend([float(i % 16) for i in range(max(0, count))])
        t.contents.int_contents.extend([300, -300][: count % 3])
    with grpc.insecure_channel(target.grpc_url) as ch:
        infer = ch.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        t0 = time.monotonic()
        try:
            infer(msg, timeout=ANSWER_S + 10)
        except grpc.RpcError as exc:
            assert exc.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), (exc.code(), exc.details())
            assert exc.details()
        assert time.monotonic() - t0 < ANSWER_S + 2.0
    probe(http)


def test_memory_stays_bounded_after_the_fuzzing(target, http):
    """Runs after the fuzzers (same module): a second burst of hostile requests adds no memory."""

    def burst() -> None:
        for i in range(200):
            body = orjson.dumps(
                {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [i % 5, 64], "data": list(range(64 * (i % 5)))}
                    ],
                    "parameters": {"latency_ms": "nan"},
                }
            )
            http.post("/v2/models/digits-mlp/infer", content=body, headers={"content-type": "application/json"})
            http.post(
                "/v2/models/digits-mlp/infer",
                content=zlib.compress(b"\0" * (8 << 20)),
                headers={"content-type": "application/json", "content-encoding": "deflate"},
            )

    burst()
    before = rss_mb()
    burst()
    assert rss_mb() - before < 50, f"RSS grew {rss_mb() - before:.0f} MB over 400 hostile requests"
    probe(http)
