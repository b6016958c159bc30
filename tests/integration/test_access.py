"""Access control: API keys (REST bearer, gRPC metadata) apart for inference and management, a
management listener of its own, and models that would make the server read files elsewhere."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from infaas.app import BackgroundServer
from infaas.client import Client, GrpcClient, InfaasClientError
from tests.conftest import one_worker_settings

INFER = "/v2/models/digits-mlp/infer"


def infer_body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


@pytest.fixture(scope="module")
def locked(tmp_path_factory, digits_data_dir):
    server = BackgroundServer(
        one_worker_settings(
            digits_data_dir,
            tmp_path_factory.mktemp("locked") / "d",
            api_keys=["infer-1", "infer-2"],
            management_api_keys=["admin"],
            management_port=0,
        )
    ).start()
    yield server
    server.stop()


def test_inference_needs_one_of_its_keys(locked, digits_samples):
    x = digits_samples[0][:1]
    r = httpx.post(locked.url + INFER, json=infer_body(x))
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    r = httpx.post(locked.url + INFER, json=infer_body(x), headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and "not accepted" in r.json()["error"]
    r = httpx.post(locked.url + INFER, json=infer_body(x), headers={"authorization": "Bearer admin"})
    assert r.status_code == 401  # a management key is not an inference key
    for key in ("infer-1", "infer-2"):
        r = httpx.post(locked.url + INFER, json=infer_body(x), headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert httpx.get(locked.url + "/v2/health/ready").status_code == 200  # probes stay open
    with Client(locked.url, api_key="infer-2") as c:
        assert c.infer("digits-mlp", x).outputs["label"].shape == (1,)


def test_management_has_its_own_listener_and_keys(locked):
    assert locked.management_url != locked.url
    assert httpx.get(locked.url + "/api/v1/tasks").status_code == 404  # not on the inference listener
    assert httpx.get(locked.management_url + INFER.removesuffix("/infer")).status_code == 404
    assert httpx.get(locked.management_url + "/api/v1/tasks").status_code == 401
    r = httpx.get(locked.management_url + "/api/v1/tasks", headers={"authorization": "Bearer infer-1"})
    assert r.status_code == 401
    with Client(locked.management_url, api_key="admin") as c:
        assert [t["name"] for t in c._json("GET", "/api/v1/tasks")] == ["digits-classification"]
    with Client(locked.management_url) as c, pytest.raises(InfaasClientError) as exc:
        c.decisions(5)
    assert exc.value.status == 401
    assert httpx.get(locked.management_url + "/v2/health/live").status_code == 200


def test_grpc_takes_the_key_as_metadata(locked, digits_samples):
    x = digits_samples[0][:1]
    with GrpcClient("grpc://" + locked.grpc_url) as c:
        assert c.live()  # open
        with pytest.raises(InfaasClientError) as exc:
            c.infer("digits-mlp", x)
        assert exc.value.status == 401
    with GrpcClient("grpc://" + locked.grpc_url, api_key="infer-1") as c:
        assert c.infer("digits-mlp", x).outputs["label"].shape == (1,)
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(locked.grpc_url)
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(x.astype(np.float32))
    result = client.infer("digits-mlp", [inp], headers={"authorization": "Bearer infer-2"})
    assert result.as_numpy("label").shape == (1,)
    with grpc.insecure_channel(locked.grpc_url) as ch:  # without a key: UNAUTHENTICATED
        from infaas.protocol.grpc_codec import SERVICE
        from infaas.protocol.proto import kserve_v2_pb2 as pb

        meta = ch.unary_unary(
            f"/{SERVICE}/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            meta(pb.ModelMetadataRequest(name="digits-mlp"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_model_with_external_data_is_refused(tmp_path, digits_server):
    """An ONNX file may name external data files by path: the server would read whatever it names."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], np.zeros(640, np.float32).tobytes(), raw=True)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "2560")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["scores"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 10])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with Client(digits_server.url) as c, pytest.raises(InfaasClientError) as exc:
        c.register("sneaky", "sneaky-task", model.SerializeToString(), accuracy=0.5)
    assert exc.value.status == 400 and "external data" in exc.value.message


def test_shared_memory_regions_take_the_management_key(locked, digits_samples):
    """A region gives the server a view of the client's memory: registering one takes a management
    key (on the inference listener, where Triton's clients call it); naming it in a request, an
    inference key."""
    import os

    x = np.ascontiguousarray(digits_samples[0][:2], dtype=np.float32)
    key = f"/infaas-access-{os.getpid()}"
    with open("/dev/shm" + key, "wb") as f:
        f.write(x.tobytes())
    register = locked.url + "/v2/systemsharedmemory/region/x/register"
    body = {"key": key, "offset": 0, "byte_size": x.nbytes}
    try:
        assert httpx.post(register, json=body).status_code == 401
        assert httpx.post(register, json=body, headers={"authorization": "Bearer infer-1"}).status_code == 401
        assert httpx.post(register, json=body, headers={"authorization": "Bearer admin"}).status_code == 200
        status = locked.url + "/v2/systemsharedmemory/status"
        assert httpx.get(status, headers={"authorization": "Bearer infer-1"}).status_code == 401
        assert httpx.get(status, headers={"authorization": "Bearer admin"}).json()[0]["key"] == key
        params = {"shared_memory_region": "x", "shared_memory_byte_size": x.nbytes}
        request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "parameters": params}]}
        r = httpx.post(locked.url + INFER, json=request, headers={"authorization": "Bearer infer-1"})
        assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 2
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(locked.grpc_url)
        with pytest.raises(InferenceServerException, match="(?i)unauthenticated|key"):
            client.unregister_system_shared_memory(headers={"authorization": "Bearer infer-1"})
        client.unregister_system_shared_memory(headers={"authorization": "Bearer admin"})
        assert httpx.get(status, headers={"authorization": "Bearer admin"}).json() == []
    finally:
        os.unlink("/dev/shm" + key)
