"""OpenVINO's formats of an architecture: the same ONNX graphs, compiled by OpenVINO for the CPU.

- ``ov-fp32``: the registered graph at f32 inference precision;
- ``ov-bf16``: the same graph at bf16 inference precision, where OpenVINO lists bf16 kernels for
  this CPU (AVX-512 BF16 or AMX);
- ``ov-int8``: ORT's INT8 QDQ graph (``onnx-int8-static``, default recipe), which OpenVINO runs with
  its own INT8 kernels;
- ``ov-int8-nncf``: NNCF's post-training quantization of the registered graph, on the same
  calibration rows (:meth:`infaas.variants.quantize.Quantizer.nncf`): OpenVINO's own quantizer
  placement, bias correction, and 7-bit weights on x86 CPUs without VNNI, where 8-bit ones saturate.

Only ``ov-int8-nncf`` writes an artifact; the others point at one already in the model store. A graph OpenVINO
cannot convert (scikit-learn's ``ai.onnx.ml`` operators, say) or an OpenVINO not installed skips
the formats with the reason; the profiler judges the rest like any other variant.
"""

from __future__ import annotations

from infaas.registry import Architecture, Registry
from infaas.variants.artifact import Artifact, Skipped
from infaas.variants.quantize import Quantizer

FORMATS = ("ov-fp32", "ov-bf16", "ov-int8", "ov-int8-nncf")


def _cause(exc: Exception) -> str:
    """The line of an OpenVINO error that says what failed (its first lines are source locations)."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "conversion rule" in ln or "not supported" in ln.lower()]
    return (useful or lines[-1:] or [type(exc).__name__])[0]


def openvino_artifacts(
    registry: Registry, arch: Architecture, onnx_artifacts: list[Artifact], quantizer: Quantizer
) -> tuple[list[Artifact], list[Skipped]]:
    """OpenVINO's formats of ``arch`` over the ONNX artifacts already made, and those skipped with why."""
    try:
        import openvino as ov
    except ImportError:
        why = "OpenVINO is not installed (pip install 'infaas[openvino]'; make install-dev installs it)"
        return [], [Skipped(f, why) for f in FORMATS]
    core = ov.Core()
    try:
        core.read_model(str(registry.models.path(arch.model_hash)))
    except Exception as exc:
        return [], [Skipped(f, f"OpenVINO cannot convert this graph: {_cause(exc)}") for f in FORMATS]
    artifacts = [Artifact("ov-fp32", arch.model_hash, "openvino", {"precision": "f32"})]
    skipped = []
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        artifacts.append(Artifact("ov-bf16", arch.model_hash, "openvino", {"precision": "bf16"}))
    else:
        skipped.append(Skipped("ov-bf16", "OpenVINO has no bf16 kernels on this CPU (they need AVX-512 BF16 or AMX)"))
    qdq = next((a for a in onnx_artifacts if a.format == "onnx-int8-static"), None)
    if qdq is None:
        skipped.append(Skipped("ov-int8", "no INT8 QDQ graph to compile (onnx-int8-static was skipped)"))
    else:
        artifacts.append(Artifact("ov-int8", qdq.key, "openvino", {**qdq.params, "precision": "f32"}))
    try:
        artifacts.append(quantizer.nncf("ov-int8-nncf"))
    except ValueError as exc:
        skipped.append(Skipped("ov-int8-nncf", str(exc)))
    return artifacts, skipped
