"""Datatype tables shared by the wire codecs, the registry and the runtimes.

KServe v2 datatype <-> numpy dtype <-> ONNX element type <-> Triton config type.
"""

from __future__ import annotations

import numpy as np

# v2 datatype -> numpy dtype (BYTES is carried as an object array of ``bytes``)
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}
NUMPY_TO_V2[np.dtype("S")] = "BYTES"

# ONNX TensorProto element types (onnx.TensorProto.*) -> v2
ONNX_TO_V2: dict[int, str] = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}

# ONNX Runtime's type strings, as reported by InferenceSession.get_inputs()
ORT_TO_V2: dict[str, str] = {
    "tensor(float)": "FP32",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(uint16)": "UINT16",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
}


def v2_to_triton_config(datatype: str) -> str:
    """``FP32`` -> ``TYPE_FP32`` (``BYTES`` -> ``TYPE_STRING``), as Triton's model config has it."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def itemsize(datatype: str) -> int:
    """Bytes per element; 0 for variable-size BYTES."""
    return 0 if datatype == "BYTES" else V2_TO_NUMPY[datatype].itemsize


def numpy_to_v2(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    return NUMPY_TO_V2[dtype]
