"""KServe v2 REST codec: JSON and binary tensors, and every way a request can be malformed."""

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infaas.client import decode_response
from infaas.errors import InvalidInput
from infaas.protocol.codec import decode_request, encode_response
from infaas.protocol.types import InferOutput, InferResponse, materialize

LIMIT = 10_000


def decode(body, header_len=None):
    """Decode a body and every tensor in it (the codec defers costly decoding)."""
    req = decode_request(body, header_len, "m", None, LIMIT)
    materialize(req.inputs)
    return req


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, str]:
    js = orjson.dumps(header)
    return js + b"".join(blobs), str(len(js))


def test_json_request():
    body = orjson.dumps(
        {
            "id": "7",
            "parameters": {"timeout": 5},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    req = decode(body)
    assert req.id == "7" and req.parameters == {"timeout": 5}
    np.testing.assert_array_equal(req.inputs[0].decode(), np.array([[1, 2], [3, 4]], np.float32))
    assert req.inputs[0].decode().dtype == np.float32
    assert req.outputs[0].name == "y" and req.outputs[0].binary is True


def test_binary_request_is_zero_copy_view_of_the_body():
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    body, hl = binary_body(
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 3], "parameters": {"binary_data_size": x.nbytes}}]},
        x.tobytes(),
    )
    req = decode(body, hl)
    np.testing.assert_array_equal(req.inputs[0].decode(), x)


def test_bytes_tensor_binary_and_json():
    items = [b"ab", b"", b"\x00xyz"]
    blob = b"".join(struct.pack("<I", len(i)) + i for i in items)
    body, hl = binary_body(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(blob)}}]},
        blob,
    )
    assert list(decode(body, hl).inputs[0].decode()) == items
    js = orjson.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]})
    assert list(decode(js).inputs[0].decode()) == [b"a", b"b"]


@pytest.mark.parametrize(
    ("header", "blob", "header_len", "message"),
    [
        (None, b"{not json", None, "not valid JSON"),
        (None, b"[1, 2]", None, "JSON object"),
        ({"inputs": []}, b"", None, "non-empty 'inputs'"),
        ({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}, b"", None, "unknown datatype"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, b"", None, "negative"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}, b"", None, "list of integers"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [100000, 100000], "data": [1]}]},
            b"",
            None,
            "over the limit",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}, b"", None, "needs 3 elements"),
        ({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": ["a"]}]}, b"", None, "does not fit"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, b"", None, "neither 'data'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]},
            b"\x00" * 8,
            "auto",
            "truncated",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 12}}]},
            b"\x00" * 12,
            "auto",
            "needs 16",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]},
            b"\x00" * 9,
            "auto",
            "not claimed",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
            b"",
            "99999",
            "does not fit a body",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}, b"", "abc", "not an integer"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "parameters": 3},
            b"",
            None,
            "JSON object",
        ),
    ],
)
def test_malformed_requests_are_rejected_with_a_clear_message(header, blob, header_len, message):
    if header is None:
        body = blob
    else:
        js = orjson.dumps(header)
        body = js + blob
        if header_len == "auto":
            header_len = str(len(js))
    with pytest.raises(InvalidInput, match=message):
        decode(body, header_len)


numeric = st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=numeric, binary=st.booleans())
def test_response_round_trips_through_the_client_decoder(data, dtype, binary):
    arr = data.draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
            elements={"allow_nan": binary, "allow_infinity": binary} if np.dtype(dtype).kind == "f" else None,
        )
    )
    from infaas.tensors import numpy_to_v2

    resp = InferResponse(
        "m", "v", [InferOutput("y", numpy_to_v2(arr.dtype), arr.shape, arr, binary)], "id1", {"variant": "v"}
    )
    body, headers = encode_response(resp)
    out = decode_response(body, headers.get("inference-header-content-length"))
    assert out.parameters == {"variant": "v"} and out.id == "id1"
    np.testing.assert_array_equal(out.outputs["y"], arr)
    assert out.outputs["y"].dtype == arr.dtype


def test_json_cannot_carry_non_finite_values_but_binary_does():
    arr = np.array([np.inf, -np.inf, np.nan, 1.5], np.float32)
    for binary in (False, True):
        body, headers = encode_response(InferResponse("m", "v", [InferOutput("y", "FP32", (4,), arr, binary)]))
        out = decode_response(body, headers.get("inference-header-content-length")).outputs["y"]
        if binary:
            np.testing.assert_array_equal(out, arr)
        else:  # standard JSON has no Inf/NaN: they arrive as null -> NaN
            assert orjson.loads(body)["outputs"][0]["data"][:3] == [None, None, None]
            assert np.isnan(out[:3]).all() and out[3] == 1.5
