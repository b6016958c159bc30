"""Hardware kinds: what a profile was measured on.

A kind names what changes the numbers a profiler measures: the CPU model and the instruction-set
extensions ONNX Runtime's kernels choose between (INT8 in particular: U8S8 GEMMs saturate without
VNNI, AMX tiles change the picture again), and the GPU model where there is one. Two machines of
one kind share profiles; a profile is never used for a worker of another kind.

The kind's id is a stable slug, e.g. ``x86_64.intel-xeon-processor.avx2-avx512f-avx512_vnni-amx``.
"""

from __future__ import annotations

import functools
import platform
import re
from dataclasses import dataclass
from pathlib import Path

# ISA extensions that change ONNX Runtime's kernel choice (x86 and Arm); the rest do not matter
FLAGS = (
    "avx2",
    "avx512f",
    "avx_vnni",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "bf16",
)


@dataclass(frozen=True)
class HardwareKind:
    machine: str  # x86_64, aarch64 ...
    cpu: str  # the CPU model as the OS reports it
    flags: tuple[str, ...]  # the FLAGS it has, in FLAGS order
    gpu: str = ""  # the GPU model, "" when none is used

    @property
    def id(self) -> str:
        """The CPU's kind: what variants on the ``cpu`` provider are profiled under."""
        flags = "-".join("amx" if f == "amx_int8" else f for f in self.flags) or "baseline"
        return ".".join([self.machine, _slug(self.cpu) or "cpu", flags])

    @property
    def vnni(self) -> bool:
        """Whether INT8 products accumulate in 32 bits in one instruction (AVX-512 VNNI, AVX-VNNI or
        AMX): without it x86's U8S8 kernels use VPMADDUBSW, whose 16-bit sums saturate."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(self.flags))

    @property
    def bf16(self) -> bool:
        """Whether the CPU computes bf16 natively (AVX-512 BF16, AMX, or Arm's BF16)."""
        return bool({"avx512_bf16", "amx_int8", "bf16"} & set(self.flags))

    def for_provider(self, provider: str) -> str:
        """The kind a variant on ``provider`` is profiled under: the CPU's, plus the GPU's for a GPU
        provider (a CPU variant measures the same on a machine with or without a GPU)."""
        return self.id if provider == "cpu" or not self.gpu else f"{self.id}.{_slug(self.gpu)}"

    def describe(self) -> str:
        text = f"{self.cpu} ({self.machine}; {', '.join(self.flags) or 'no vector extensions that matter'})"
        return f"{text} + {self.gpu}" if self.gpu else text

    def as_dict(self) -> dict:
        return {"id": self.id, "machine": self.machine, "cpu": self.cpu, "flags": list(self.flags), "gpu": self.gpu}


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower()).split("@")[0].strip()
    text = re.sub(r"\s+cpu$", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:48]


def parse_cpuinfo(text: str, machine: str) -> HardwareKind:
    """The kind described by a ``/proc/cpuinfo`` (first processor's model and flags)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:  # Arm kernels often name only the implementer and part
        impl = re.search(r"CPU implementer\s*:\s*(\S+)", text)
        part = re.search(r"CPU part\s*:\s*(\S+)", text)
        model = f"arm-{impl.group(1)}-{part.group(1)}" if impl and part else platform.processor() or machine
    return HardwareKind(machine, model, tuple(f for f in FLAGS if f in flags))


def _gpu() -> str:
    """The first NVIDIA GPU's model as ``nvidia-smi`` names it, else "cuda-gpu" where ONNX Runtime has
    a CUDA provider, else "". Asked of the driver, not of a runtime: ONNX Runtime's CUDA provider and
    PyTorch's CUDA build both profile their ``cuda`` variants under this name, and neither is imported
    here to find it (a CPU variant's kind never includes it)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import onnxruntime

        return "cuda-gpu" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else ""
    except Exception:
        return ""


@functools.cache
def local_kind() -> HardwareKind:
    """This machine's kind (read once per process)."""
    machine = platform.machine() or "unknown"
    info = Path("/proc/cpuinfo")
    if info.exists():
        kind = parse_cpuinfo(info.read_text(errors="replace"), machine)
    else:
        kind = HardwareKind(machine, platform.processor() or machine, ())
    return HardwareKind(kind.machine, kind.cpu, kind.flags, _gpu())
