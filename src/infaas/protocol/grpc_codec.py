"""KServe v2 gRPC messages <-> the protocol-agnostic request and response (server and client).

Every field a client can get wrong is checked; typed ``contents`` are decoded lazily (after the
request was checked against the model's signature), raw contents are wrapped without a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infaas.errors import InvalidInput
from infaas.protocol.codec import check_shape, input_from_bytes, tensor_to_bytes
from infaas.protocol.proto import kserve_v2_pb2 as pb
from infaas.protocol.shm import ref_of
from infaas.protocol.types import InferInput, InferRequest, InferResponse, RequestedOutput
from infaas.tensors import V2_TO_NUMPY

SERVICE = "inference.GRPCInferenceService"

# datatype -> the InferTensorContents field that carries it
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def params_from_pb(params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def params_to_pb(target, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int | np.integer):
            param.int64_param = int(value)
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        else:
            param.string_param = str(value)


def decode_infer(req: pb.ModelInferRequest, max_elements: int) -> InferRequest:
    """A v2 gRPC ModelInferRequest as the protocol-agnostic request (every field checked)."""
    if not req.inputs:
        raise InvalidInput("request needs at least one input")
    params = [params_from_pb(t.parameters) for t in req.inputs]
    refs = [ref_of(p, f"input '{t.name}'") for p, t in zip(params, req.inputs, strict=True)]
    raw = iter(req.raw_input_contents)
    plain = sum(r is None for r in refs)  # raw contents are those of the inputs not in shared memory
    if req.raw_input_contents and len(req.raw_input_contents) != plain:
        raise InvalidInput(
            f"{len(req.raw_input_contents)} raw_input_contents for {plain} inputs not in shared memory: send "
            "one per such input (all raw, or all typed contents)"
        )
    inputs = []
    for tensor, in_params, ref in zip(req.inputs, params, refs, strict=True):
        name, datatype = tensor.name, tensor.datatype
        if not name:
            raise InvalidInput("each input needs a 'name'")
        if datatype not in V2_TO_NUMPY:
            raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
        shape = check_shape(list(tensor.shape), name, max_elements)
        if ref is not None:  # bound to the client's region by the router
            if tensor.contents.ByteSize():
                raise InvalidInput(f"input '{name}' names a shared-memory region and carries contents too")
            inputs.append(InferInput(name, datatype, shape, None, in_params, shm=ref))
            continue
        if req.raw_input_contents:
            inputs.append(input_from_bytes(name, datatype, shape, next(raw), in_params))
            continue
        field = CONTENTS.get(datatype)
        if field is None:
            raise InvalidInput(f"input '{name}': {datatype} travels only in raw_input_contents")
        values = getattr(tensor.contents, field)
        count = int(np.prod(shape))
        if len(values) != count:
            raise InvalidInput(f"input '{name}': {len(values)} values in contents, shape {list(shape)} needs {count}")
        inputs.append(
            InferInput(name, datatype, shape, None, in_params, pending=_contents_thunk(values, datatype, shape, name))
        )
    outputs = []
    for o in req.outputs:
        out_params = params_from_pb(o.parameters)
        outputs.append(RequestedOutput(o.name, None, out_params, ref_of(out_params, f"output '{o.name}'")))
    return InferRequest(
        req.model_name,
        req.model_version or None,
        inputs,
        outputs or None,
        req.id or None,
        params_from_pb(req.parameters),
    )


def _contents_thunk(values, datatype: str, shape: tuple[int, ...], name: str):
    def decode() -> np.ndarray:
        if datatype == "BYTES":
            arr = np.empty(len(values), dtype=object)
            arr[:] = list(values)
            return arr.reshape(shape)
        dtype = V2_TO_NUMPY[datatype]
        if dtype.kind in "iu" and dtype.itemsize < 8 and len(values):
            # int_contents / uint_contents carry the narrower types too: out of range is a bad request
            wide = np.asarray(values, dtype=np.int64)
            info = np.iinfo(dtype)
            if wide.min() < info.min or wide.max() > info.max:
                raise InvalidInput(
                    f"input '{name}': contents do not fit datatype {datatype} ([{info.min}, {info.max}])"
                )
            return wide.astype(dtype).reshape(shape)
        return np.asarray(values, dtype=dtype).reshape(shape)

    return decode


def encode_infer(resp: InferResponse) -> pb.ModelInferResponse:
    """Outputs always travel as raw_output_contents (as Triton answers)."""
    out = pb.ModelInferResponse(model_name=resp.model_name, model_version=resp.model_version, id=resp.id or "")
    params_to_pb(out.parameters, resp.parameters)
    for o in resp.outputs:
        out.outputs.add(name=o.name, datatype=o.datatype, shape=list(o.shape))
        if o.region is not None:  # in the client's region; an empty entry keeps the others' positions
            out.raw_output_contents.append(b"")
        else:
            out.raw_output_contents.append(tensor_to_bytes(o.data, o.datatype))
    return out
