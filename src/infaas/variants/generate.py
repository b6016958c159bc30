"""The variant generator: every registered architecture becomes a family of candidate variants.

Formats (each an ONNX artifact in the model store):
- ``onnx-fp32``: the registered graph; ORT applies all graph optimisations when it loads;
- ``onnx-int8-static``: QDQ, calibrated on the registration data, after ORT's quantization
  pre-processing (shape inference + optimisation). Default recipe: MinMax, uint8 activations, int8
  weights, per-channel. When it loses more than the bound on this machine, the profiler searches
  further recipes (calibration method, reduce_range, activation and weight types, per-tensor,
  then the most sensitive nodes kept in fp32: ``int8-mixed``) and keeps the fastest that meets it;
- ``onnx-int8-dynamic``: dynamic quantization (int8 weights, activations quantized at run time;
  MatMul-heavy graphs such as transformers), searched the same way;
- ``onnx-fp16``: only when a CUDA provider is present (skipped here otherwise, with the reason);
- ``ov-fp32``, ``ov-bf16``, ``ov-int8``, ``ov-int8-nncf``: the same graphs, and NNCF's INT8 one, run by OpenVINO (:mod:`infaas.variants.openvino`);
- ``pt-fp32``, ``pt-aot-fp32``, ``pt-bf16``: the architecture's registered PyTorch program, where
  one was registered (:mod:`infaas.variants.pytorch`): eager, compiled ahead of time, bf16; the
  eager ones also on a CUDA device where PyTorch sees one.
Execution configurations multiply each format: intra-op threads (1, 2, 4 … up to a worker's
cores) and max batch (1, 4, 8, 16 … up to the architecture's max batch). Whether a variant is any
good is the profiler's business: nothing here decides by rule that a format is slow.
"""

from __future__ import annotations

from collections.abc import Callable

from infaas.registry import Architecture, Registry, Variant, variant_name
from infaas.variants.artifact import Artifact, Skipped
from infaas.variants.openvino import openvino_artifacts
from infaas.variants.pytorch import pytorch_artifacts
from infaas.variants.quantize import DEFAULT_RECIPES, Quantizer


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


def generate_artifacts(
    registry: Registry,
    arch: Architecture,
    *,
    gpu: bool = False,
    progress: Callable[[str], None] | None = None,
    runtimes: tuple[str, ...] | list[str] = ("onnxruntime", "openvino", "pytorch"),
) -> tuple[list[Artifact], list[Skipped]]:
    """Build every format of ``arch`` with its default recipe and store it, for ``runtimes``
    (ONNX Runtime always: its fp32 graph is every variant's parent); returns the artifacts and
    what was skipped, with why."""
    artifacts = [Artifact("onnx-fp32", arch.model_hash, "baseline", {"graph_optimization": "all"})]
    skipped: list[Skipped] = []
    say = progress or (lambda _msg: None)
    with Quantizer(registry, arch, progress) as q:
        for fmt, recipe in DEFAULT_RECIPES.items():
            if (why := q.why_not(fmt)) is not None:
                skipped.append(Skipped(fmt, why))
                continue
            try:
                artifacts.append(q.quantize(fmt, recipe))
            except ValueError as exc:
                skipped.append(Skipped(fmt, str(exc)))
        if "openvino" in runtimes:  # its INT8 forms quantize with the same calibration rows
            say("OpenVINO: checking that it converts the graph")
            more, why_not = openvino_artifacts(registry, arch, artifacts, q)
            artifacts += more
            skipped += why_not
    source = registry.models.path(arch.model_hash)
    if not gpu:
        skipped.append(Skipped("onnx-fp16", "no CUDA execution provider on this machine"))
    else:
        say("onnx-fp16: converting weights and activations (inputs and outputs keep their types)")
        try:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            fp16 = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
            artifacts.append(
                Artifact(
                    "onnx-fp16",
                    registry.models.put_bytes(fp16.SerializeToString(), ".onnx"),
                    "fp16",
                    {"keep_io_types": True},
                )
            )
        except Exception as exc:
            skipped.append(Skipped("onnx-fp16", f"conversion failed: {exc}"))
    if "pytorch" in runtimes:
        say("PyTorch: loading the registered program, measuring its memory format, compiling it (AOTInductor)")
        more, why_not = pytorch_artifacts(registry, arch)
        artifacts += more
        skipped += why_not
    return artifacts, skipped


def cuda_available() -> bool:
    """True when ONNX Runtime here has a CUDA execution provider (onnxruntime-gpu and a GPU)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


GPU_FORMATS = ("onnx-fp32", "onnx-fp16")  # QDQ INT8 runs poorly on plain CUDA (TensorRT territory)
TORCH_GPU_FORMATS = ("pt-fp32", "pt-bf16")  # where their build saw a CUDA device (params["cuda_device"])


def plan_variants(
    arch: Architecture,
    artifacts: list[Artifact],
    max_threads: int,
    max_batch: int,
    gpu: bool = False,
) -> list[Variant]:
    """Every (format, provider, threads, max batch) combination, as pending variants: CPU formats
    at 1, 2 … ``max_threads`` threads; with ONNX Runtime's CUDA provider, fp32 and fp16 on CUDA, and
    PyTorch's eager formats on CUDA where their build saw a device (one host thread each)."""
    baseline = variant_name(arch.name, "onnx-fp32", "cpu", max_threads, max_batch)
    configs = [(art, "cpu", t) for art in artifacts if art.format != "onnx-fp16" for t in powers_of_two(max_threads)]
    if gpu:
        configs += [(art, "cuda", 1) for art in artifacts if art.format in GPU_FORMATS]
    configs += [(a, "cuda", 1) for a in artifacts if a.format in TORCH_GPU_FORMATS and a.params.get("cuda_device")]
    variants = []
    for art, provider, threads in configs:
        for mb in batch_sizes(max_batch):
            name = variant_name(arch.name, art.format, provider, threads, mb)
            variants.append(
                Variant(
                    name=name,
                    architecture=arch.name,
                    format=art.format,
                    provider=provider,
                    threads=threads,
                    max_batch=mb,
                    artifact_hash=art.key,
                    parent=None if name == baseline else baseline,
                    method=art.method if name != baseline else "baseline",
                    params=art.params,
                    accuracy=None,
                    accuracy_source="unknown",
                    status="pending",
                    reason="waiting to be profiled",
                )
            )
    return variants
