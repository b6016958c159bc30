"""Runtimes behind one small contract: load(), infer(batch) -> outputs of the same length, unload(), metadata()."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from infaas.errors import RuntimeContractError


class Runtime(Protocol):
    """What the worker, the profiler's measurements and the batching code ask of a runtime."""

    threads: int
    load_time_s: float

    def load(self) -> None: ...
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def unload(self) -> None: ...
    def metadata(self) -> dict: ...
    def release_memory(self) -> None: ...
    def sample_inputs(self, rows: int) -> dict[str, np.ndarray] | None: ...


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


class OpenVinoRuntime:
    """An OpenVINO compiled model for one variant: the registered ONNX graph (or ORT's QDQ INT8 one),
    compiled for the CPU at ``precision`` ("f32" or "bf16": OpenVINO's inference precision hint,
    which defaults to bf16 on CPUs that have it, so fp32 variants ask for f32 explicitly) with
    ``threads`` threads and one stream; one infer request, its outputs copied out (the request
    reuses its buffers). ``cache_dir``: OpenVINO's model cache (compiled blobs by content), so a
    reload skips the compile."""

    def __init__(
        self, path: str | Path, threads: int = 1, precision: str = "f32", cache_dir: str | Path | None = None
    ) -> None:
        self.path = Path(path)
        self.threads = max(1, threads)
        self.precision = precision
        self.cache_dir = cache_dir
        self.provider = "cpu"
        self._compiled = None
        self._request = None
        self.load_time_s = 0.0

    def load(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeContractError(f"OpenVINO is not installed ({exc}): pip install 'infaas[openvino]'") from None
        start = time.perf_counter()
        core = ov.Core()
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,  # workers share the machine's cores; the OS places threads
        }
        self._compiled = core.compile_model(str(self.path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._inputs = [(port.any_name, port) for port in self._compiled.inputs]
        self._outputs = [(port.any_name, port) for port in self._compiled.outputs]
        self.load_time_s = time.perf_counter() - start

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._request is None:
            raise RuntimeContractError("runtime is not loaded")
        results = self._request.infer({name: inputs[name] for name, _ in self._inputs})
        return {name: np.array(results[port], copy=True) for name, port in self._outputs}

    def unload(self) -> None:
        self._request = self._compiled = None

    def release_memory(self) -> None:
        """Nothing to shrink: the compiled model's buffers are sized per shape by OpenVINO."""

    def sample_inputs(self, rows: int) -> dict[str, np.ndarray] | None:
        """Zeros of the model's input shapes, or None when a non-batch dimension is free."""
        if self._compiled is None:
            return None
        out = {}
        for name, port in self._inputs:
            shape = port.get_partial_shape()
            dims = shape[1:]
            if not all(d.is_static for d in dims):
                return None
            dtype = port.get_element_type().to_dtype()
            out[name] = np.zeros((rows, *(d.get_length() for d in dims)), dtype=dtype)
        return out

    def metadata(self) -> dict:
        return {
            "path": str(self.path),
            "threads": self.threads,
            "runtime": "openvino",
            "precision": self.precision,
            "load_time_s": self.load_time_s,
        }


def make_runtime(
    path: str | Path,
    fmt: str = "onnx-fp32",
    threads: int = 1,
    provider: str = "cpu",
    allow_spinning: bool = False,
    cache_dir: str | Path | None = None,
    options: dict | None = None,
) -> Runtime:
    """The runtime a variant's format names (:func:`infaas.registry.types.runtime_of`); ``options``:
    the artifact's recorded load options (``Variant.params``), read by the runtime that needs them."""
    from infaas.registry.types import runtime_of

    runtime, defaults = runtime_of(fmt)
    if runtime == "openvino":
        return OpenVinoRuntime(path, threads=threads, precision=defaults.get("precision", "f32"), cache_dir=cache_dir)
    if runtime == "pytorch":
        from infaas.worker.torch_runtime import TorchRuntime

        opts = {**(options or {}), **defaults}
        return TorchRuntime(
            path,
            threads=threads,
            precision=opts["precision"],
            device=provider,
            outputs=opts.get("outputs") or (),
            channels_last=bool(opts.get("channels_last")),
            compiled_for=opts.get("built_for") if opts.get("compiled") else None,
            inputs=opts.get("inputs"),
        )
    return OnnxRuntime(path, threads=threads, provider=provider, allow_spinning=allow_spinning)


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
