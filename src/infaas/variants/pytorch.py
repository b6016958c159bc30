"""PyTorch's formats of an architecture: its registered ``torch.export`` program, eager or compiled.

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
The eager formats point at the registered program; the compiled one is a new artifact. No program
registered, PyTorch not installed, or a program that does not load: the formats are skipped with
the reason. All of it runs in a child process (:mod:`infaas.variants.pytorch_build`), which also
says whether PyTorch sees a CUDA device (``params["cuda_device"]`` of the eager formats).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

from infaas.hardware import local_kind
from infaas.registry import Architecture, Registry
from infaas.variants.artifact import Artifact, Skipped
from infaas.variants.child import run_child

FORMATS = ("pt-fp32", "pt-aot-fp32", "pt-bf16")
BUILD_TIMEOUT_S = 1800  # loading, timing both memory formats and compiling (~40 s for Lite0 on 2 cores)


def _built(registry: Registry, arch: Architecture, threads: int, aot: Path) -> dict:
    """:func:`build` in a child process (torch, its compiler and any crash of theirs stay out of the
    server); RuntimeError with the child's reason."""
    outputs = [o.name for o in arch.signature.outputs]
    args = [str(registry.models.path(arch.program_hash)), str(threads), str(aot), *outputs]
    out = run_child("infaas.variants.pytorch_build", args, aot.parent, BUILD_TIMEOUT_S, "building its PyTorch formats")
    return json.loads(out.strip().splitlines()[-1])


def pytorch_artifacts(registry: Registry, arch: Architecture, threads: int = 1) -> tuple[list[Artifact], list[Skipped]]:
    """PyTorch's formats of ``arch`` (from its registered program) and those skipped, with why."""
    if arch.program_hash is None:
        why = "no PyTorch program registered for this architecture (register one with --program model.pt2)"
        return [], [Skipped(f, why) for f in FORMATS]
    if importlib.util.find_spec("torch") is None:
        return [], [Skipped(f, "PyTorch is not installed (pip install 'infaas[zoo]')") for f in FORMATS]
    with tempfile.TemporaryDirectory() as tmp:
        aot = Path(tmp) / "aot.pt2"
        try:
            result = _built(registry, arch, threads, aot)
        except RuntimeError as exc:
            return [], [Skipped(f, f"the PyTorch program does not load or run: {exc}") for f in FORMATS]
        params, compiled = result["params"], result["aot"]
        eager = {**params, "cuda_device": result["cuda_device"]}
        artifacts = [Artifact("pt-fp32", arch.program_hash, "pytorch", {**eager, "precision": "fp32"})]
        skipped = []
        if "error" in compiled:
            skipped.append(Skipped("pt-aot-fp32", f"AOTInductor could not compile the program: {compiled['error']}"))
        else:
            plain = {k: v for k, v in params.items() if not k.startswith("channels_last")}
            extra = {"precision": "fp32", "compiled": True, "built_for": local_kind().id, **compiled}
            key = registry.models.put_file(aot, ".pt2")
            artifacts.append(Artifact("pt-aot-fp32", key, "aotinductor", {**plain, **extra}))
    if local_kind().bf16:
        artifacts.append(Artifact("pt-bf16", arch.program_hash, "pytorch", {**eager, "precision": "bf16"}))
    else:
        skipped.append(
            Skipped("pt-bf16", "no bf16 instructions on this CPU (AVX-512 BF16 or AMX): PyTorch would emulate them")
        )
    return artifacts, skipped
