"""Large JSON ``data`` of whole numbers decoded without Python lists: the same tensors, and the same
errors, as the full JSON parse, whatever the nesting, spacing and number spelling."""

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infaas.errors import InvalidInput
from infaas.protocol import codec, json_tensors
from infaas.protocol.types import materialize

LIMIT = 1 << 20
PAD = "p" * json_tensors.MIN_BYTES  # a parameter that makes any body large enough to be cut


def decode(body: bytes, fast: bool, monkeypatch) -> list[np.ndarray]:
    monkeypatch.setattr(json_tensors, "MIN_BYTES", 0 if fast else 1 << 40)
    req = codec.decode_request(body, None, "m", None, LIMIT)
    materialize(req.inputs)
    return [i.data for i in req.inputs]


def outcome(body: bytes, fast: bool, monkeypatch):
    try:
        return decode(body, fast, monkeypatch)
    except InvalidInput as exc:
        return exc.message


def body_of(inputs_text: str) -> bytes:
    return f'{{"id": "{PAD}", "inputs": [{inputs_text}]}}'.encode()


DTYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
}


@settings(max_examples=60, deadline=None)
@given(
    datatype=st.sampled_from(sorted(DTYPES)),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    nested=st.booleans(),
    spacing=st.sampled_from(["", " ", "\n  "]),
    data=st.data(),
)
def test_cut_arrays_decode_as_the_json_parser_does(datatype, shape, nested, spacing, data):
    dtype = np.dtype(DTYPES[datatype])
    elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    arr = data.draw(hnp.arrays(dtype, shape, elements=elements))
    written = arr
    if dtype.kind == "f" and data.draw(st.booleans()):  # whole numbers written as such for a float input (pixels)
        written = np.clip(np.round(arr), -1e6, 1e6).astype(np.int64)
    listed = written.tolist() if nested else written.ravel().tolist()
    text = orjson.dumps(listed).decode().replace(",", "," + spacing).replace("[", "[" + spacing)
    body = body_of(f'{{"name": "x", "datatype": "{datatype}", "shape": {list(shape)}, "data": {text}}}')
    with pytest.MonkeyPatch.context() as mp:
        whole = not any(c in text for c in ".eE")  # fractions and exponents are left to orjson
        assert bool(codec._parse_header(memoryview(body))[1]) == whole
        fast, full = decode(body, True, mp), decode(body, False, mp)
    assert fast[0].dtype == full[0].dtype == dtype and fast[0].shape == tuple(shape)
    np.testing.assert_array_equal(fast[0], full[0])


@pytest.mark.parametrize(
    "inputs",
    [
        '{"name": "x", "datatype": "UINT8", "shape": [3], "data": [1, 2, 300]}',  # out of range
        '{"name": "x", "datatype": "UINT8", "shape": [2], "data": [-1, 2]}',
        '{"name": "x", "datatype": "INT32", "shape": [2], "data": [1.5, 2]}',  # a float for an integer type
        '{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}',  # too few
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}',  # ragged, too many
        '{"name": "x", "datatype": "FP32", "shape": [3], "data": [[1], [2, 3]]}',  # ragged: row-major
        '{"name": "x", "datatype": "FP32", "shape": [0], "data": []}',
        '{"name": "x", "datatype": "BOOL", "shape": [2], "data": [1, 0]}',
        '{"name": "x", "datatype": "INT64", "shape": [1], "data": [9223372036854775807]}',
        '{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1e400, 1]}',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2], "parameters": {"data": [3]}}',
        '{"name": "x\\"data": [1, 2], "datatype": "FP32", "shape": [2], "data": [1, 2]}',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2], "data": [3, 4]}',  # duplicate key
        '{"name": "x", "datatype": "FP32", "shape": [1], "data": ["\\u0000infaas-data:0"]}',  # our marker
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1 2]}',  # not JSON
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1,, 2]}',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]]}',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1],[2]}',  # two arrays: not JSON
        '{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [[1],[2]] , "parameters": {}}',
        '{"name": "x", "datatype": "INT16", "shape": [2, 2], "data": [[-1, 2], [3, 32767]]}',
        '{"name": "x", "datatype": "FP32", "shape": [0], "data": [ ] }',
        '{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, true]}',
    ],
)
def test_odd_data_gets_the_answer_of_the_full_parse(inputs, monkeypatch):
    body = body_of(inputs)
    fast, full = outcome(body, True, monkeypatch), outcome(body, False, monkeypatch)
    if isinstance(full, str):
        # the same error; a span that is not JSON is found when its input is decoded (after the signature
        # check), and the message then names the input instead of the body's position
        assert fast == full or (
            fast.startswith("input 'x': data is not valid JSON") and full.startswith("request body is not valid JSON")
        ), (fast, full)
    else:
        assert [a.dtype for a in fast] == [a.dtype for a in full]
        for a, b in zip(fast, full, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_large_image_body_is_cut_and_decoded_exactly():
    img = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    body = orjson.dumps(
        {"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(img.shape), "data": img.tolist()}]}
    )
    header, spans = codec._parse_header(memoryview(body))
    assert len(spans) == 1 and len(orjson.dumps(header)) < 200  # the header parsed without the pixels
    req = codec.decode_request(body, None, "m", None, LIMIT)
    materialize(req.inputs)
    np.testing.assert_array_equal(req.inputs[0].data, img)
