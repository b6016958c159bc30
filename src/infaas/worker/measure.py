"""What a worker measures and checks around a runtime: artifact hashes, warm-up, the batch-size
calibration at load, answers for quality estimates, and this process's memory."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import time

import numpy as np

from infaas.worker.runtime import OnnxRuntime


def resize_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``x`` cut or tiled along ``axis`` to ``size`` (timing a dynamic axis, e.g. sequence length)."""
    if x.shape[axis] >= size:
        return np.ascontiguousarray(np.take(x, np.arange(size), axis=axis))
    return np.ascontiguousarray(np.take(x, np.arange(size) % max(1, x.shape[axis]), axis=axis))


def answers(outputs: dict[str, np.ndarray], signature, metric: str, top: int = 5) -> dict:
    """What the quality estimate of ``metric`` needs from a model's outputs: for ``top1`` the top-1
    class per row and, when it has scores, its top-``top`` classes with their probabilities; for a
    fidelity metric every float output (as float32)."""
    from infaas.registry.onnxinfo import class_probabilities, predicted_labels

    if metric == "top1":
        out: dict = {"predictions": predicted_labels(outputs, signature), "top_classes": None, "top_probs": None}
        probs = class_probabilities(outputs, signature)
        if probs is not None:
            k = min(top, probs.shape[1])
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            out["top_classes"], out["top_probs"] = order, np.take_along_axis(probs, order, axis=1)
        return out
    floats = [np.asarray(outputs[s.name], np.float32) for s in signature.outputs if s.datatype.startswith(("FP", "BF"))]
    if not floats:
        raise ValueError(f"metric {metric!r} compares float outputs and the model has none")
    return {"outputs": floats}


class ArtifactCorrupt(Exception):
    """A model file whose content no longer matches the hash it is stored under."""


def verify_artifact(path: str, sha256: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise ArtifactCorrupt(
            f"{path} does not match its hash (sha256 {digest.hexdigest()[:12]}…, "
            f"stored as {sha256[:12]}…): the model store is corrupt, re-register the model"
        )


def warm_up(runtime: OnnxRuntime) -> None:
    """One batch of one row, so the first request does not pay the runtime's lazy initialisation."""
    samples = runtime.sample_inputs(1)
    if samples is not None:
        with contextlib.suppress(Exception):  # a model failing on zeros fails its requests with their inputs
            runtime.infer(samples)


def calibrate(runtime: OnnxRuntime, max_batch: int, budget_s: float = 3.0) -> dict[int, float]:
    """Warm the runtime up and time one batch at sizes 1, 2, 4 ... max_batch (best of 3 runs).

    Returns {batch: seconds}; empty when the inputs have free non-batch dimensions (no sample
    can be made up) or the model fails on zeros.
    """
    samples = runtime.sample_inputs(1)
    if samples is None:
        return {}
    timings: dict[int, float] = {}
    spent = time.perf_counter()
    batch = 1
    while batch <= max_batch:
        inputs = {k: np.repeat(v, batch, axis=0) for k, v in samples.items()}
        try:
            runtime.infer(inputs)  # warm-up
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                runtime.infer(inputs)
                runs.append(time.perf_counter() - t0)
        except Exception:
            return timings
        timings[batch] = min(runs)
        if time.perf_counter() - spent > budget_s:
            break
        batch = batch * 2 if batch * 2 <= max_batch or batch == max_batch else max_batch
    return timings


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def trim() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0
