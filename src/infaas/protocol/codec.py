"""KServe v2 REST wire format, including Triton's binary tensor data extension.

Decoding checks everything a client can get wrong before any tensor is built:
JSON syntax, field types, datatypes, shapes (no negative dims, bounded element
count), and that binary sizes add up to the body. Costly decoding (JSON data
lists, BYTES elements) is left pending (see :mod:`infaas.protocol.types`) until
the request has been checked against the model's signature.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from infaas.errors import InvalidInput
from infaas.protocol import json_tensors
from infaas.protocol.params import parse_bool
from infaas.protocol.shm import ref_of
from infaas.protocol.types import InferInput, InferRequest, InferResponse, RequestedOutput
from infaas.tensors import V2_TO_NUMPY, itemsize

HEADER_LENGTH = "inference-header-content-length"


def _as_dict(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def check_shape(raw: Any, name: str, limit: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise InvalidInput(f"input '{name}': shape must be a list of integers")
    if any(d < 0 for d in raw):
        raise InvalidInput(f"input '{name}': shape {raw} has a negative dimension")
    if math.prod(raw) > limit:
        raise InvalidInput(f"input '{name}': shape {raw} declares {math.prod(raw)} elements, over the limit of {limit}")
    return tuple(raw)


def decode_bytes_tensor(buf: memoryview, count: int, name: str) -> np.ndarray:
    """BYTES in binary form: each element is a little-endian u32 length then its bytes."""
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(buf):
            raise InvalidInput(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise InvalidInput(f"input '{name}': BYTES element {i} runs past the data")
        out[i] = bytes(buf[pos : pos + n])
        pos += n
    if pos != len(buf):
        raise InvalidInput(f"input '{name}': {len(buf) - pos} stray bytes after BYTES data")
    return out


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.ravel():
        b = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def tensor_from_bytes(chunk: memoryview | bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A tensor from its raw little-endian bytes (BYTES: length-prefixed elements), size-checked."""
    count = math.prod(shape)
    if datatype == "BYTES":
        if len(chunk) < 4 * count:
            raise InvalidInput(f"input '{name}': {len(chunk)} bytes cannot hold {count} BYTES elements")
        return decode_bytes_tensor(memoryview(chunk), count, name).reshape(shape)
    expected = count * itemsize(datatype)
    if len(chunk) != expected:
        raise InvalidInput(
            f"input '{name}': {len(chunk)} bytes of binary data, shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(chunk, dtype=V2_TO_NUMPY[datatype]).reshape(shape)


def input_from_bytes(
    name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview | bytes, params: dict[str, Any]
) -> InferInput:
    """A binary input: fixed-size types are checked and wrapped now (no copy); BYTES later."""
    if datatype != "BYTES":
        return InferInput(name, datatype, shape, tensor_from_bytes(chunk, datatype, shape, name), params)
    return InferInput(
        name, datatype, shape, None, params, pending=lambda: tensor_from_bytes(chunk, datatype, shape, name)
    )


def tensor_to_bytes(arr: np.ndarray, datatype: str) -> bytes:
    return encode_bytes_tensor(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()


def _json_data(raw: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten(raw)
        if len(flat) != count:
            raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} elements, data has {len(flat)}")
        if not all(isinstance(s, str) for s in flat):
            raise InvalidInput(f"input '{name}': BYTES data in JSON must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = [s.encode() for s in flat]
    else:
        try:
            try:
                arr = np.asarray(raw, dtype=V2_TO_NUMPY[datatype])
            except ValueError:  # ragged nesting: read in row-major order (as the cut path reads it)
                arr = np.asarray(_flatten(raw), dtype=V2_TO_NUMPY[datatype])
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"input '{name}': data does not fit datatype {datatype}: {exc}") from exc
    if arr.size != count:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} elements, data has {arr.size}")
    return arr.reshape(shape)


def _json_thunk(raw: Any, datatype: str, shape: tuple[int, ...], name: str):
    return lambda: _json_data(raw, datatype, shape, name)


def _span_data(span: bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A numeric ``data`` array cut from the JSON text: NumPy's parser when it reads it exactly, else the
    JSON parser (and its checks and messages)."""
    if datatype != "BYTES":
        arr = json_tensors.parse_numbers(span, V2_TO_NUMPY[datatype], math.prod(shape))
        if arr is not None:
            return arr.reshape(shape)
    try:
        raw = orjson.loads(span)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"input '{name}': data is not valid JSON: {exc}") from None
    return _json_data(raw, datatype, shape, name)


def _span_thunk(span: bytes, datatype: str, shape: tuple[int, ...], name: str):
    return lambda: _span_data(span, datatype, shape, name)


def _loads(text: bytes | memoryview) -> dict:
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInput("request body must be a JSON object")
    return header


def _parse_header(text: memoryview) -> tuple[dict, list[bytes]]:
    """The request's JSON, with large numeric ``data`` arrays left as text (:mod:`json_tensors`) when every
    one cut out belongs to an input; otherwise (or when anything about the cut is off) parsed whole."""
    cut = json_tensors.cut_numeric_data(text)
    if cut is not None:
        try:
            header = orjson.loads(cut[0])
        except orjson.JSONDecodeError:
            header = None
        if isinstance(header, dict) and _marked(header.get("inputs")) == len(cut[1]):
            return header, cut[1]
    return _loads(text), []


def _marked(raw_inputs: Any) -> int:
    """How many inputs' ``data`` is a marker of a cut-out array."""
    if not isinstance(raw_inputs, list):
        return -1
    return sum(1 for r in raw_inputs if isinstance(r, dict) and json_tensors.marker_index(r.get("data")) is not None)


def _flatten(raw: Any) -> list:
    if not isinstance(raw, list):
        return [raw]
    out: list = []
    for item in raw:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def decode_request(
    body: bytes, header_length: str | None, model: str, version: str | None, max_elements: int
) -> InferRequest:
    """Decode a v2 infer request body (JSON, or JSON + binary tensors)."""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise InvalidInput(f"Inference-Header-Content-Length is not an integer: {header_length!r}") from None
        if not 0 < json_len <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {json_len} does not fit a body of {len(body)} bytes")
    else:
        json_len = len(body)
    view = memoryview(body)
    header, spans = _parse_header(view[:json_len])
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs a non-empty 'inputs' list")

    params = _as_dict(header.get("parameters"), "parameters")
    binary = view[json_len:]
    offset = 0
    inputs: list[InferInput] = []
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise InvalidInput("each input must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("each input needs a 'name'")
        datatype = raw.get("datatype")
        if datatype not in V2_TO_NUMPY:
            raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
        shape = check_shape(raw.get("shape"), name, max_elements)
        in_params = _as_dict(raw.get("parameters"), f"input '{name}' parameters")
        size = in_params.get("binary_data_size")
        ref = ref_of(in_params, f"input '{name}'")
        if ref is not None:  # its bytes lie in a region the client registered (bound by the router)
            if size is not None or "data" in raw:
                raise InvalidInput(f"input '{name}' names a shared-memory region and carries data too")
            inputs.append(InferInput(name, datatype, shape, None, in_params, shm=ref))
            continue
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left): truncated request?"
                )
            chunk = binary[offset : offset + size]
            offset += size
            inputs.append(input_from_bytes(name, datatype, shape, chunk, in_params))
        elif "data" in raw:
            k = json_tensors.marker_index(raw["data"]) if spans else None
            thunk = (
                _json_thunk(raw["data"], datatype, shape, name)
                if k is None
                else _span_thunk(spans[k], datatype, shape, name)
            )
            inputs.append(InferInput(name, datatype, shape, None, in_params, pending=thunk))
        else:
            raise InvalidInput(f"input '{name}' has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input's binary_data_size"
        )

    outputs = _requested_outputs(header.get("outputs"))
    rid = header.get("id")
    return InferRequest(model, version, inputs, outputs, None if rid is None else str(rid), params)


def _requested_outputs(raw_outputs: Any) -> list[RequestedOutput] | None:
    if raw_outputs is None:
        return None
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput("each requested output needs a 'name'")
        out_params = _as_dict(raw.get("parameters"), "output parameters")
        flag = None if out_params.get("binary_data") is None else parse_bool(out_params, "binary_data", False)
        outputs.append(RequestedOutput(raw["name"], flag, out_params, ref_of(out_params, f"output '{raw['name']}'")))
    return outputs


def encode_response(resp: InferResponse) -> tuple[bytes, dict[str, str]]:
    """Encode a v2 infer response; binary outputs go after the JSON header."""
    outs = []
    blobs: list[bytes] = []
    for out in resp.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.region is not None:
            pass  # written to the client's region: name, datatype and shape only, as Triton answers (its
            # C++ client, perf_analyzer's, reads output parameters as binary_data_size)
        elif out.binary:
            blob = tensor_to_bytes(out.data, out.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif out.datatype == "BYTES":
            entry["data"] = [b.decode(errors="replace") if isinstance(b, bytes) else str(b) for b in out.data.ravel()]
        else:
            entry["data"] = np.ascontiguousarray(out.data).ravel()
        outs.append(entry)
    header: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if resp.id is not None:
        header["id"] = resp.id
    if resp.parameters:
        header["parameters"] = resp.parameters
    header["outputs"] = outs
    js = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default)
    if not blobs:
        return js, {"content-type": "application/json"}
    return b"".join([js, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(js)),
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")
