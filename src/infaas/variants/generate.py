"""The variant generator: every registered architecture becomes a family of candidate variants.

Formats (each an ONNX artifact in the model store):
- ``onnx-fp32``: the registered graph; ORT applies all graph optimisations when it loads;
- ``onnx-int8-static``: QDQ, per-channel, uint8 activations / int8 weights, calibrated on the
  registration data, after ORT's quantization pre-processing (shape inference + optimisation);
- ``onnx-int8-static-s8``: the same with int8 activations;
- ``onnx-int8-dynamic``: dynamic quantization of weights;
- ``onnx-fp16``: only when a CUDA provider is present (skipped here otherwise, with the reason).
Execution configurations multiply each format: intra-op threads (1, 2, 4 … up to a worker's
cores) and max batch (1, 4, 8, 16 … up to the architecture's max batch). Whether a variant is any
good is the profiler's business: nothing here decides by rule that a format is slow.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infaas.registry import Architecture, Registry, Variant, variant_name

QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose", "Gather", "Attention", "LSTM", "GRU"}


@dataclass(frozen=True)
class Artifact:
    """One generated format of an architecture (shared by its execution configurations)."""

    format: str
    key: str  # model store key
    method: str
    params: dict = field(default_factory=dict)


@dataclass
class Skipped:
    format: str
    reason: str


def powers_of_two(limit: int, start: int = 1) -> list[int]:
    out, n = [], start
    while n <= limit:
        out.append(n)
        n *= 2
    if out and out[-1] != limit and limit > start:
        out.append(limit)
    return out


def batch_sizes(max_batch: int) -> list[int]:
    """Max-batch settings for variants: 1, 4, 8, 16, … up to the architecture's max batch."""
    return [b for b in powers_of_two(max_batch) if b == 1 or b >= 4]


def calibration_inputs(registry: Registry, arch: Architecture, rows: int = 128) -> dict[str, np.ndarray] | None:
    """Inputs for calibration: the first half of the calibration data, else of the validation data."""
    from infaas.registry.onnxinfo import load_validation, named_inputs

    key = arch.calibration_hash or arch.validation_hash
    if key is None:
        return None
    inputs, _ = load_validation(registry.models.path(key).read_bytes(), need_labels=False)
    inputs = named_inputs(inputs, arch.signature)
    n = len(next(iter(inputs.values())))
    half = max(1, n // 2)  # the first half calibrates; the profiler evaluates on the second
    return {k: np.ascontiguousarray(v[: min(rows, half)]) for k, v in inputs.items()}


def _has_quantizable_ops(model_path: Path) -> bool:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return any(node.op_type in QUANTIZABLE_OPS for node in graph.node)


def _quantized_something(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                             "QLinearConv", "QLinearMatMul", "DequantizeLinear") for n in graph.node)  # fmt: skip


class _QuietQuantizer(logging.Filter):
    """Drops ONNX Runtime quantization's warnings (multi-line tensor dumps on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def generate_artifacts(
    registry: Registry, arch: Architecture, *, gpu: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Artifact], list[Skipped]]:
    """Build every format of ``arch`` and store it; returns the artifacts and what was skipped, with why."""
    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        return _generate(registry, arch, gpu, progress)
    finally:
        logging.getLogger().removeFilter(quiet)


def _generate(
    registry: Registry, arch: Architecture, gpu: bool, progress: Callable[[str], None] | None
) -> tuple[list[Artifact], list[Skipped]]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,  # fmt: skip
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    say = progress or (lambda _msg: None)
    artifacts = [Artifact("onnx-fp32", arch.model_hash, "baseline", {"graph_optimization": "all"})]
    skipped: list[Skipped] = []
    source = registry.models.path(arch.model_hash)
    if not _has_quantizable_ops(source):
        for fmt in ("onnx-int8-static", "onnx-int8-static-s8", "onnx-int8-dynamic"):
            skipped.append(Skipped(fmt, f"no quantizable operators ({', '.join(sorted(QUANTIZABLE_OPS))}) in the graph"))
    else:
        with tempfile.TemporaryDirectory(prefix="infaas-variants-") as tmp:
            tmpdir = Path(tmp)
            pre = tmpdir / "pre.onnx"
            say("pre-processing for quantization (shape inference, optimisation)")
            try:
                quant_pre_process(str(source), str(pre))
            except Exception as exc:  # some graphs defeat symbolic shape inference
                pre = source
                say(f"pre-processing skipped: {exc}")
            calib = calibration_inputs(registry, arch)
            if calib is None:
                for fmt in ("onnx-int8-static", "onnx-int8-static-s8"):
                    skipped.append(Skipped(fmt, "no calibration or validation data was registered"))
            else:
                rows = len(next(iter(calib.values())))

                class Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._it = iter([{k: v[i : i + 1] for k, v in calib.items()} for i in range(rows)])

                    def get_next(self):
                        return next(self._it, None)

                for fmt, act in (("onnx-int8-static", QuantType.QUInt8), ("onnx-int8-static-s8", QuantType.QInt8)):
                    say(f"{fmt}: calibrating on {rows} inputs")
                    out = tmpdir / f"{fmt}.onnx"
                    # ORT's per-channel weight-scale adjustment for int32 biases fails on some Gemm
                    # graphs; the second attempt skips that adjustment and says so in the params
                    attempts = ({}, {"QDQDisableWeightAdjustForInt32Bias": True})
                    errors = []
                    for extra in attempts:
                        try:
                            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                            activation_type=act, weight_type=QuantType.QInt8, extra_options=extra)  # fmt: skip
                            break
                        except Exception as exc:
                            errors.append(f"{type(exc).__name__}: {exc}")
                    else:
                        skipped.append(Skipped(fmt, f"quantization failed: {'; '.join(errors)}"))
                        continue
                    if not _quantized_something(out):
                        skipped.append(Skipped(fmt, "the quantizer left the graph unchanged"))
                        continue
                    artifacts.append(Artifact(fmt, registry.models.put_file(out), "int8-static", {
                        "quant_format": "QDQ", "per_channel": True, "calibration_rows": rows,
                        "activation_type": act.name, "weight_type": "QInt8",
                        "calibrated_on": "calibration" if arch.calibration_hash else "validation",
                        **extra,
                    }))  # fmt: skip
            say("onnx-int8-dynamic: quantizing weights")
            out = tmpdir / "dyn.onnx"
            try:
                quantize_dynamic(str(pre), str(out), weight_type=QuantType.QUInt8)
                if _quantized_something(out):
                    artifacts.append(Artifact("onnx-int8-dynamic", registry.models.put_file(out), "int8-dynamic",
                                              {"weight_type": "QUInt8"}))  # fmt: skip
                else:
                    skipped.append(Skipped("onnx-int8-dynamic", "the quantizer left the graph unchanged"))
            except Exception as exc:
                skipped.append(Skipped("onnx-int8-dynamic", f"quantization failed: {exc}"))
    if not gpu:
        skipped.append(Skipped("onnx-fp16", "no CUDA execution provider on this machine"))
    else:
        say("onnx-fp16: converting weights and activations (inputs and outputs keep their types)")
        try:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            fp16 = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
            artifacts.append(Artifact("onnx-fp16", registry.models.put_bytes(fp16.SerializeToString(), ".onnx"),
                                      "fp16", {"keep_io_types": True}))  # fmt: skip
        except Exception as exc:
            skipped.append(Skipped("onnx-fp16", f"conversion failed: {exc}"))
    return artifacts, skipped


def cuda_available() -> bool:
    """True when ONNX Runtime here has a CUDA execution provider (onnxruntime-gpu and a GPU)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


GPU_FORMATS = ("onnx-fp32", "onnx-fp16")  # QDQ INT8 runs poorly on plain CUDA (TensorRT territory)


def plan_variants(arch: Architecture, artifacts: list[Artifact], max_threads: int, max_batch: int,
                  gpu: bool = False) -> list[Variant]:  # fmt: skip
    """Every (format, provider, threads, max batch) combination, as pending variants: CPU formats
    at 1, 2 … ``max_threads`` threads; with a GPU, fp32 and fp16 on CUDA (one host thread)."""
    baseline = variant_name(arch.name, "onnx-fp32", "cpu", max_threads, max_batch)
    configs = [(art, "cpu", t) for art in artifacts if art.format != "onnx-fp16" for t in powers_of_two(max_threads)]
    if gpu:
        configs += [(art, "cuda", 1) for art in artifacts if art.format in GPU_FORMATS]
    variants = []
    for art, provider, threads in configs:
        for mb in batch_sizes(max_batch):
            name = variant_name(arch.name, art.format, provider, threads, mb)
            variants.append(Variant(
                name=name, architecture=arch.name, format=art.format, provider=provider, threads=threads,
                max_batch=mb, artifact_hash=art.key, parent=None if name == baseline else baseline,
                method=art.method if name != baseline else "baseline", params=art.params,
                accuracy=None, accuracy_source="unknown", status="pending", reason="waiting to be profiled",
            ))  # fmt: skip
    return variants
