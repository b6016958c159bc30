"""What the registry reads from an ONNX file and its validation data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx

from infaas.errors import InvalidInput
from infaas.registry.types import Signature, TensorSpec
from infaas.tensors import ONNX_TO_V2


def read_signature(model: bytes | str | Path) -> Signature:
    """Inputs and outputs of an ONNX graph, with the batch dimension as -1."""
    try:
        proto = (
            onnx.load_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(str(model), load_external_data=False)
        )
    except Exception as exc:  # onnx raises several types for a bad file
        raise InvalidInput(f"not a readable ONNX model: {exc}") from exc
    if external := _external_tensors(proto.graph):
        raise InvalidInput(
            f"the model keeps tensor(s) {external[:3]} in external data files: infaas stores one "
            "self-contained file (save with onnx.save(model, path, save_as_external_data=False))"
        )
    initializers = {i.name for i in proto.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        ttype = value.type.tensor_type
        if not value.type.HasField("tensor_type") or ttype.elem_type not in ONNX_TO_V2:
            raise InvalidInput(f"tensor {value.name!r} is not a plain tensor; unsupported")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if dims:
            dims[0] = -1  # dim 0 is the batch
        return TensorSpec(name=value.name, datatype=ONNX_TO_V2[ttype.elem_type], shape=tuple(dims))

    inputs = tuple(spec(v) for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in proto.graph.output)
    if not inputs or not outputs:
        raise InvalidInput("the ONNX graph must have at least one input and one output")
    return Signature(inputs=inputs, outputs=outputs)


def _external_tensors(graph: onnx.GraphProto) -> list[str]:
    """Names of tensors (initializers and constant attributes, subgraphs included) whose data lives
    in files beside the model: a path the server would read on the uploader's say-so."""
    found = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    found += [t.values.name for t in graph.sparse_initializer if t.values.data_location == onnx.TensorProto.EXTERNAL]
    for node in graph.node:
        for attr in node.attribute:
            tensors = [attr.t] if attr.HasField("t") else list(attr.tensors)
            found += [t.name or node.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found += _external_tensors(sub)
    return found


def load_validation(
    data: bytes | str | Path, need_labels: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """An ``.npz`` with ``labels`` and either ``inputs`` (single-input models) or one array per input name.

    Calibration data is the same without ``labels`` (``need_labels=False``)."""
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        with np.load(source, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise InvalidInput(f"validation data is not a readable .npz: {exc}") from exc
    if "labels" not in arrays and need_labels:
        raise InvalidInput("validation .npz needs a 'labels' array")
    labels = arrays.pop("labels", None)
    if not arrays:
        raise InvalidInput(".npz needs 'inputs' (or one array per model input)")
    lengths = {len(a) for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if len(lengths) != 1:
        raise InvalidInput("inputs (and labels) in the .npz differ in length")
    return arrays, labels


def named_inputs(inputs: dict[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """Map an .npz's arrays to the model's input names (a lone ``inputs`` goes to a lone input), cast."""
    from infaas.tensors import V2_TO_NUMPY

    if set(inputs) == {"inputs"} and len(signature.inputs) == 1:
        inputs = {signature.inputs[0].name: inputs["inputs"]}
    missing = {s.name for s in signature.inputs} - set(inputs)
    if missing:
        raise InvalidInput(f"data lacks model inputs {sorted(missing)}")
    return {s.name: np.ascontiguousarray(inputs[s.name], dtype=V2_TO_NUMPY[s.datatype]) for s in signature.inputs}


def class_probabilities(outputs: dict[str, np.ndarray], signature: Signature) -> np.ndarray | None:
    """Class probabilities per row from the first score output (softmax unless it already sums to 1)."""
    for spec in signature.outputs:
        out = outputs[spec.name]
        if out.ndim == 2 and spec.datatype.startswith("FP") and out.shape[1] > 1:
            scores = out.astype(np.float64)
            if not (np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
                scores = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores /= scores.sum(axis=1, keepdims=True)
            return scores
    return None


def default_metric(signature: Signature) -> str:
    """A task's metric when its first model does not say: ``top1`` for classifier outputs (an integer
    label per row, or one row of class scores), ``cosine`` fidelity for anything else."""
    for spec in signature.outputs:
        if spec.datatype.startswith(("INT", "UINT")) and len(spec.shape) == 1:
            return "top1"
    first = signature.outputs[0]
    if len(first.shape) == 2 and first.datatype.startswith("FP") and first.shape[1] != 1:
        return "top1"
    return "cosine"


def predicted_labels(outputs: dict[str, np.ndarray], signature: Signature) -> np.ndarray:
    """Top-1 class per row: an integer rank-1 output if the model has one, else argmax of scores."""
    for spec in signature.outputs:
        out = outputs[spec.name]
        if spec.datatype.startswith(("INT", "UINT")) and out.ndim == 1:
            return out.astype(np.int64)
    for spec in signature.outputs:
        out = outputs[spec.name]
        if out.ndim == 2 and spec.datatype.startswith("FP"):
            return out.argmax(axis=1)
    raise InvalidInput("cannot read a class from the model's outputs (need int labels or scores)")
