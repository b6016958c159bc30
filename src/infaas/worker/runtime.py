"""Runtimes behind one small contract: load(), infer(batch) -> outputs of the same length, unload(), metadata()."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from infaas.errors import RuntimeContractError


class Runtime(Protocol):
    def load(self) -> None: ...
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def unload(self) -> None: ...
    def metadata(self) -> dict: ...


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntime:
    """An ONNX Runtime session for one variant."""

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        provider: str = "cpu",
        allow_spinning: bool = False,
        graph_optimization: bool = True,
    ) -> None:
        self.path = Path(path)
        self.threads = max(1, threads)
        self.provider = provider
        self.allow_spinning = allow_spinning
        self.graph_optimization = graph_optimization
        self._session = None
        self._output_names: list[str] = []
        self.load_time_s = 0.0

    def load(self) -> None:
        import onnxruntime as ort

        start = time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.graph_optimization
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        opts.log_severity_level = 3
        providers = [PROVIDERS[self.provider]] + (["CPUExecutionProvider"] if self.provider != "cpu" else [])
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        self._output_names = [o.name for o in self._session.get_outputs()]
        self.load_time_s = time.perf_counter() - start

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeContractError("runtime is not loaded")
        results = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))

    def unload(self) -> None:
        self._session = None

    def release_memory(self) -> None:
        """Shrink the CPU arena to what one row needs. The arena keeps the largest batch's
        activations for the session's life: a load's calibration sweep to batch 16 left
        EfficientNet-Lite0 fp32 (2 threads) holding +197 MiB, +2 MiB after this; serving grows it
        again only as far as the batches it runs. (Turning the arena off instead keeps memory low
        but made batch 16 44 % slower: every large tensor became an mmap and its page faults.)"""
        if self._session is None or self.provider != "cpu":
            return
        inputs = self.sample_inputs(1)
        if inputs is None:
            return
        import onnxruntime as ort

        opts = ort.RunOptions()
        opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        with contextlib.suppress(Exception):  # a model that rejects zeros keeps its arena
            self._session.run(self._output_names, inputs, opts)

    def sample_inputs(self, rows: int) -> dict[str, np.ndarray] | None:
        """Zeros of the model's input shapes, or None when a non-batch dimension is free."""
        if self._session is None:
            return None
        from infaas.tensors import ORT_TO_V2, V2_TO_NUMPY

        out = {}
        for spec in self._session.get_inputs():
            dims = spec.shape[1:]
            if spec.type not in ORT_TO_V2 or ORT_TO_V2[spec.type] == "BYTES":
                return None
            if not all(isinstance(d, int) and d > 0 for d in dims):
                return None
            out[spec.name] = np.zeros((rows, *dims), dtype=V2_TO_NUMPY[ORT_TO_V2[spec.type]])
        return out

    def metadata(self) -> dict:
        return {
            "path": str(self.path),
            "threads": self.threads,
            "provider": self.provider,
            "load_time_s": self.load_time_s,
        }


def infer_checked(runtime: Runtime, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Run the runtime and fail loudly unless every output has ``rows`` rows."""
    outputs = runtime.infer(inputs)
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != rows:
            raise RuntimeContractError(
                f"runtime returned {value.shape[0] if value.ndim else 'a scalar'} rows "
                f"for output {name!r}, expected {rows}"
            )
        outputs[name] = value
    return outputs
