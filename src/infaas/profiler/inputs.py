"""Evaluation inputs for profiling, with or without data registered.

Order of preference: labelled validation data (quality is *measured*), else the half of the
calibration data the quantizer did not see, else inputs synthesized from the signature:

- a dynamic axis other than the batch (e.g. sequence length) takes the representative size
  ``Settings.profile_axis_size`` (128 by default), and latency is also timed over that axis at
  1/8, 1/4, 1/2, 1 and 2 times that size;
- an integer input that indexes an embedding table (a ``Gather`` on a weight, possibly through a
  Cast or Reshape) gets uniform ids below the table's size; one whose name says it is a mask gets
  ones up to a random length per row (half to all of the axis) and zeros after; any other integer
  input gets zeros (token types, segment ids);
- float inputs get standard normal values, ``UINT8`` inputs uniform 0..255, booleans True.

Synthesized inputs are seeded: the same model gets the same inputs on every install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infaas.registry.types import Signature
from infaas.tensors import V2_TO_NUMPY

PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}


def embedding_sizes(model_path: str | Path) -> dict[str, int]:
    """For each graph input that indexes an initializer through ``Gather``: the table's row count."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tables = {t.name: (t.dims[0] if t.dims else 0) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    sizes: dict[str, int] = {}
    for inp in graph.input:
        frontier, seen = [inp.name], set()
        for _ in range(4):  # follow a few shape-only hops
            nxt = []
            for tensor in frontier:
                for node in consumers.get(tensor, []):
                    if (
                        node.op_type == "Gather"
                        and len(node.input) > 1
                        and node.input[1] == tensor
                        and node.input[0] in tables
                        and tables[node.input[0]] > 0
                    ):
                        sizes[inp.name] = min(sizes.get(inp.name, 1 << 62), int(tables[node.input[0]]))
                    elif node.op_type in PASS_THROUGH and node.output[0] not in seen:
                        seen.add(node.output[0])
                        nxt.append(node.output[0])
            frontier = nxt
    return sizes


def dynamic_axes(signature: Signature) -> dict[str, int]:
    """{input name: dimension} of every non-batch dynamic dimension (each input's first one)."""
    out = {}
    for spec in signature.inputs:
        for dim, size in enumerate(spec.shape[1:], 1):
            if size < 0:
                out[spec.name] = dim
                break
    return out


def axis_spec(signature: Signature) -> str:
    """The dynamic axes as a profile names them (``"input_ids[1], attention_mask[1]"``); the router
    reads a request's length through the same text (``registry.types.axis_length``)."""
    return ", ".join(f"{k}[{d}]" for k, d in dynamic_axes(signature).items())


def axis_sizes(representative: int) -> list[int]:
    return sorted(
        {
            max(1, representative // 8),
            max(1, representative // 4),
            max(1, representative // 2),
            representative,
            representative * 2,
        }
    )


def synthesize(
    model_path: str | Path, signature: Signature, rows: int, axis_size: int = 128, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = embedding_sizes(model_path)
    lengths = rng.integers(max(1, axis_size // 2), axis_size + 1, size=rows)
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = (rows, *[axis_size if d < 0 else d for d in spec.shape[1:]])
        dtype = np.dtype(V2_TO_NUMPY[spec.datatype])
        if spec.name in vocab:
            x = rng.integers(0, vocab[spec.name], size=shape).astype(dtype)
        elif dtype.kind in "iu" and "mask" in spec.name.lower():
            positions = np.arange(shape[-1]) if len(shape) > 1 else np.zeros(1)
            x = (positions[None, :] < lengths[:, None]).astype(dtype).reshape(rows, *([1] * (len(shape) - 2)), -1)
            x = np.ascontiguousarray(np.broadcast_to(x, shape))
        elif dtype == np.uint8:
            x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif dtype.kind in "iu":
            x = np.zeros(shape, dtype)
        elif dtype.kind == "b":
            x = np.ones(shape, bool)
        else:
            x = rng.standard_normal(shape).astype(dtype)
        out[spec.name] = x
    return out
