"""``python -m infaas.variants.pytorch_build``: the child process that builds an architecture's PyTorch
formats (:mod:`infaas.variants.pytorch`): loads the registered program, records its inputs, times both
memory formats, and compiles it ahead of time with AOTInductor. torch, its compiler and any crash of
theirs stay out of the server."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from infaas.variants.child import child_main


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
    recorded = [[n, None if d is None else list(d), str(t).removeprefix("torch.")] for n, d, t in plain.input_specs]
    inputs = plain.sample_inputs(4)
    if inputs is None or not plain.has_4d_weights:
        return {"inputs": recorded, "channels_last": False}
    cl = TorchRuntime(path, threads=threads, outputs=outputs, channels_last=True)
    cl.load()
    ratio = _median_ms(plain, inputs) / _median_ms(cl, inputs)
    return {"inputs": recorded, "channels_last": ratio > 1.05, "channels_last_speedup": round(ratio, 3)}


def _compile(program: Path, dst: Path) -> dict:
    """The program compiled ahead of time by AOTInductor into ``dst``: {"compile_s"}, or {"error"}."""
    import torch

    start = time.perf_counter()
    try:
        exported = torch.export.load(str(program))
        torch._inductor.aoti_compile_and_package(exported, package_path=str(dst))
    except Exception as exc:
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return {"error": cause[:300]}
    return {"compile_s": round(time.perf_counter() - start, 1)}


def build(program: Path, outputs: list[str], threads: int, aot: Path) -> dict:
    """In the child process: the program's load options (inputs, measured memory format) and its
    AOTInductor package written to ``aot``."""
    import torch

    params = {"outputs": outputs, **_memory_format(program, outputs, threads)}
    return {"params": params, "aot": _compile(program, aot), "cuda_device": torch.cuda.is_available()}


def _step(args: list[str]) -> str:
    """``python -m infaas.variants.pytorch_build PROGRAM THREADS AOT OUTPUT...``: :func:`build`, as one
    JSON line on stdout; a program that does not load or run exits 2 with the reason."""
    program, threads, aot, *outputs = args
    return json.dumps(build(Path(program), outputs, int(threads), Path(aot)))


if __name__ == "__main__":
    child_main(_step)
