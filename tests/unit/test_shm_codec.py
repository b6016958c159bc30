"""Shared-memory references in requests (REST and gRPC decoding) and the server's regions, on real
/dev/shm objects; no server."""

import os

import numpy as np
import orjson
import pytest

from infaas.errors import InvalidInput
from infaas.protocol.codec import decode_request, encode_response
from infaas.protocol.grpc_codec import decode_infer, encode_infer, params_to_pb
from infaas.protocol.proto import kserve_v2_pb2 as pb
from infaas.protocol.shm import ShmRef, path_of, ref_of
from infaas.protocol.types import InferOutput, InferResponse
from infaas.serving.regions import Regions, deliver

REGION = {"shared_memory_region": "r", "shared_memory_byte_size": 16}


def test_ref_of_checks_each_parameter():
    assert ref_of({}, "x") is None
    assert ref_of(REGION, "x") == ShmRef("r", 0, 16)
    assert ref_of({**REGION, "shared_memory_offset": "8"}, "x") == ShmRef("r", 8, 16)  # string-only clients
    for bad, fragment in (
        ({"shared_memory_region": "r"}, "needs 'shared_memory_byte_size'"),
        ({**REGION, "shared_memory_offset": -1}, "non-negative"),
        ({**REGION, "shared_memory_byte_size": True}, "non-negative"),
        ({"shared_memory_region": 3, "shared_memory_byte_size": 4}, "region's name"),
        ({"shared_memory_byte_size": 4}, "without 'shared_memory_region'"),
    ):
        with pytest.raises(InvalidInput, match=fragment):
            ref_of(bad, "x")


@pytest.mark.parametrize("key", ["", "/", "/a/b", "/..", "..", "a\x00b", 7])
def test_keys_outside_dev_shm_are_refused(key):
    with pytest.raises(InvalidInput):
        path_of(key)


def test_rest_input_in_a_region_carries_no_data():
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": REGION}
    req = decode_request(orjson.dumps({"inputs": [tensor]}), None, "m", None, 1 << 20)
    assert req.inputs[0].shm == ShmRef("r", 0, 16) and req.inputs[0].data is None
    with pytest.raises(InvalidInput, match="carries data too"):
        decode_request(orjson.dumps({"inputs": [{**tensor, "data": [1, 2, 3, 4]}]}), None, "m", None, 1 << 20)
    outputs = [{"name": "y", "parameters": REGION}]
    req = decode_request(orjson.dumps({"inputs": [tensor], "outputs": outputs}), None, "m", None, 1 << 20)
    assert req.outputs[0].shm == ShmRef("r", 0, 16)


def test_grpc_raw_contents_belong_to_the_inputs_not_in_regions():
    msg = pb.ModelInferRequest(model_name="m")
    params_to_pb(msg.inputs.add(name="a", datatype="FP32", shape=[1, 4]).parameters, REGION)
    msg.inputs.add(name="b", datatype="FP32", shape=[1, 2])
    msg.raw_input_contents.append(np.arange(2, dtype=np.float32).tobytes())
    req = decode_infer(msg, 1 << 20)
    assert req.inputs[0].shm is not None and req.inputs[1].data.tolist() == [[0.0, 1.0]]
    msg.raw_input_contents.append(b"\0" * 16)  # one for the region's input too: refused
    with pytest.raises(InvalidInput, match="2 raw_input_contents for 1 inputs not in shared memory"):
        decode_infer(msg, 1 << 20)


@pytest.fixture
def region_file():
    key = f"/infaas-unit-{os.getpid()}"
    path = "/dev/shm" + key
    with open(path, "wb") as f:
        f.write(np.arange(4096, dtype=np.float32).tobytes())
    yield key
    os.unlink(path)


def test_regions_bind_read_in_place_and_deliver_write_in_bounds(region_file):
    regions = Regions()
    regions.register("in", region_file, 4096 + 64, 256)  # past a page boundary: the mapping is aligned
    assert regions.status() == [{"name": "in", "key": region_file, "offset": 4096 + 64, "byte_size": 256}]
    tensor = {"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": {**REGION, "shared_memory_region": "in"}}
    tensor["parameters"]["shared_memory_byte_size"] = 32
    outputs = [
        {
            "name": "y",
            "parameters": {"shared_memory_region": "in", "shared_memory_offset": 128, "shared_memory_byte_size": 16},
        }
    ]
    req = decode_request(orjson.dumps({"inputs": [tensor], "outputs": outputs}), None, "m", None, 1 << 20)
    regions.bind(req)
    first = (4096 + 64) // 4
    assert req.inputs[0].data.ravel().tolist() == list(range(first, first + 8))
    assert req.inputs[0].span.start == 4096 + 64 and req.inputs[0].span.nbytes == 32
    out = InferOutput("y", "FP32", (1, 4), np.full((1, 4), -1, np.float32))
    deliver(req, [out])
    assert out.region == "in"
    with open("/dev/shm" + region_file, "rb") as f:
        f.seek(4096 + 64 + 128)
        assert np.frombuffer(f.read(16), np.float32).tolist() == [-1.0] * 4
    body, _ = encode_response(InferResponse("m", "1", [out]))
    assert orjson.loads(body)["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 4]}
    grpc_out = encode_infer(InferResponse("m", "1", [out]))
    assert list(grpc_out.raw_output_contents) == [b""]
    too_big = InferOutput("y", "FP32", (1, 8), np.zeros((1, 8), np.float32))
    with pytest.raises(InvalidInput, match="holds 16"):
        deliver(req, [too_big])
    req.inputs[0].shm = ShmRef("in", 240, 32)  # 240 + 32 > 256
    with pytest.raises(InvalidInput, match="runs past"):
        regions.bind(req)
    del req
    assert regions.unregister("in") == ["in"] and regions.unregister("in") == []
    with pytest.raises(InvalidInput, match="no shared-memory region named 'in'"):
        regions.status("in")


def test_region_limits(region_file):
    regions = Regions(limit=1)
    regions.register("a", region_file, 0, 16)
    with pytest.raises(InvalidInput, match="already registered"):
        regions.register("a", region_file, 0, 16)
    with pytest.raises(InvalidInput, match="the most this server holds"):
        regions.register("b", region_file, 0, 16)
    with pytest.raises(InvalidInput, match="byte_size must be positive"):
        Regions().register("c", region_file, 0, 0)
    with pytest.raises(InvalidInput, match="fewer than"):
        Regions().register("c", region_file, 16000, 400)
    regions.close()
    assert regions.status() == []
