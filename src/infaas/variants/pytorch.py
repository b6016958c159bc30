"""PyTorch's formats of an architecture: its registered ``torch.export`` program, run eagerly.

- ``pt-fp32``: the program as registered;
- ``pt-aot-fp32``: the program compiled ahead of time by AOTInductor (``torch.compile``'s code
  generator, run once here, at generation: ~40 s for digits-conv or EfficientNet-Lite0 on 2 cores)
  into a package with a shared library for this CPU kind, stored beside the program. It loads
  faster than the eager program (profiled on an AVX2-only EPYC: 0.9-1.3 s against 2.3-3.5 s; the
  eager load deserializes and re-traces the program) and runs without Python between operators.
  Needs a C++ compiler; without one it is skipped with the cause;
- ``pt-bf16``: the same under bf16 autocast, where the CPU has bf16 instructions (AVX-512 BF16 or
  AMX); without them PyTorch emulates bf16 (EfficientNet-Lite0, batch 8, AVX2-only EPYC: 6.3 s
  against 0.51 s in fp32), so the format is skipped with that reason. On a CUDA device both run
  there too (the planner adds ``cuda`` configurations).

Channels-last is measured, not assumed: for a program with 4-D weights the generator times both
memory formats at one batch and records the faster in the artifact's ``params`` with the ratio.
The eager formats point at the registered program; the compiled one is a new artifact. No program registered, PyTorch
not installed, or a program that does not load: the formats are skipped with the reason.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from infaas.hardware import local_kind
from infaas.registry import Architecture, Registry
from infaas.variants.artifact import Artifact, Skipped

FORMATS = ("pt-fp32", "pt-aot-fp32", "pt-bf16")


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
    """The program's inputs as recorded for the runtime, and channels-last or not, by measurement at
    batch 4 (only for programs with 4-D weights)."""
    from infaas.worker.torch_runtime import TorchRuntime

    plain = TorchRuntime(path, threads=threads, outputs=outputs)
    plain.load()
    recorded = [[n, None if d is None else list(d), str(t).removeprefix("torch.")] for n, d, t in plain._inputs]
    inputs = plain.sample_inputs(4)
    if inputs is None or not any(p.dim() == 4 for p in plain._module.parameters()):
        return {"inputs": recorded, "channels_last": False}
    cl = TorchRuntime(path, threads=threads, outputs=outputs, channels_last=True)
    cl.load()
    ratio = _median_ms(plain, inputs) / _median_ms(cl, inputs)
    return {"inputs": recorded, "channels_last": ratio > 1.05, "channels_last_speedup": round(ratio, 3)}


def _compiled(registry: Registry, arch: Architecture, params: dict) -> Artifact | Skipped:
    """The program compiled ahead of time by AOTInductor for this CPU kind, or why not."""
    import torch

    start = time.perf_counter()
    try:
        program = torch.export.load(str(registry.models.path(arch.program_hash)))
        with tempfile.TemporaryDirectory() as tmp:
            package = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(tmp) / "aot.pt2"))
            key = registry.models.put_file(Path(package), ".pt2")
    except Exception as exc:
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return Skipped("pt-aot-fp32", f"AOTInductor could not compile the program: {cause[:300]}")
    seconds = round(time.perf_counter() - start, 1)
    extra = {"precision": "fp32", "compiled": True, "built_for": local_kind().id, "compile_s": seconds}
    return Artifact("pt-aot-fp32", key, "aotinductor", {**params, **extra})


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
    compiled = _compiled(registry, arch, {k: v for k, v in params.items() if not k.startswith("channels_last")})
    (artifacts if isinstance(compiled, Artifact) else skipped).append(compiled)
    if bf16_instructions():
        artifacts.append(Artifact("pt-bf16", arch.program_hash, "pytorch", {**params, "precision": "bf16"}))
    else:
        skipped.append(
            Skipped("pt-bf16", "no bf16 instructions on this CPU (AVX-512 BF16 or AMX): PyTorch would emulate them")
        )
    return artifacts, skipped
