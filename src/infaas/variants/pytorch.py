"""PyTorch's formats of an architecture: its registered ``torch.export`` program, run eagerly.

- ``pt-fp32``: the program as registered;
- ``pt-bf16``: the same under bf16 autocast, where the CPU has bf16 instructions (AVX-512 BF16 or
  AMX); without them PyTorch emulates bf16 (EfficientNet-Lite0, batch 8, AVX2-only EPYC: 6.3 s
  against 0.51 s in fp32), so the format is skipped with that reason. On a CUDA device both run
  there too (the planner adds ``cuda`` configurations).

Channels-last is measured, not assumed: for a program with 4-D weights the generator times both
memory formats at one batch and records the faster in the artifact's ``params`` with the ratio.
Nothing is written: both formats point at the registered program. No program registered, PyTorch
not installed, or a program that does not load: the formats are skipped with the reason.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from infaas.hardware import local_kind
from infaas.registry import Architecture, Registry
from infaas.variants.artifact import Artifact, Skipped

FORMATS = ("pt-fp32", "pt-bf16")


def bf16_instructions() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16, AMX, or Arm's BF16)."""
    return bool({"avx512_bf16", "amx_int8", "bf16"} & set(local_kind().flags))


def _median_ms(runtime, inputs: dict, repeats: int = 5) -> float:
    runtime.infer(inputs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.infer(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _memory_format(path: Path, outputs: list[str], threads: int) -> dict:
    """Channels-last or not, by measurement at batch 4 (only for programs with 4-D weights)."""
    from infaas.worker.torch_runtime import TorchRuntime

    plain = TorchRuntime(path, threads=threads, outputs=outputs)
    plain.load()
    inputs = plain.sample_inputs(4)
    if inputs is None or not any(p.dim() == 4 for p in plain._module.parameters()):
        return {"channels_last": False}
    cl = TorchRuntime(path, threads=threads, outputs=outputs, channels_last=True)
    cl.load()
    ratio = _median_ms(plain, inputs) / _median_ms(cl, inputs)
    return {"channels_last": ratio > 1.05, "channels_last_speedup": round(ratio, 3)}


def pytorch_artifacts(registry: Registry, arch: Architecture, threads: int = 1) -> tuple[list[Artifact], list[Skipped]]:
    """PyTorch's formats of ``arch`` (from its registered program) and those skipped, with why."""
    if arch.program_hash is None:
        why = "no PyTorch program registered for this architecture (register one with --program model.pt2)"
        return [], [Skipped(f, why) for f in FORMATS]
    try:
        import torch  # noqa: F401
    except ImportError:
        return [], [Skipped(f, "PyTorch is not installed (pip install 'infaas[zoo]')") for f in FORMATS]
    outputs = [o.name for o in arch.signature.outputs]
    try:
        params = {"outputs": outputs, **_memory_format(registry.models.path(arch.program_hash), outputs, threads)}
    except Exception as exc:
        why = (
            f"the PyTorch program does not load or run: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
        return [], [Skipped(f, why) for f in FORMATS]
    artifacts = [Artifact("pt-fp32", arch.program_hash, "pytorch", {**params, "precision": "fp32"})]
    skipped = []
    if bf16_instructions():
        artifacts.append(Artifact("pt-bf16", arch.program_hash, "pytorch", {**params, "precision": "bf16"}))
    else:
        skipped.append(
            Skipped("pt-bf16", "no bf16 instructions on this CPU (AVX-512 BF16 or AMX): PyTorch would emulate them")
        )
    return artifacts, skipped
