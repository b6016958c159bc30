"""One measurement of one artifact in a fresh worker process (timings per batch, over a dynamic
axis, load time, memory; its answers when evaluated), the evaluation inputs, and what a
measurement makes of a variant: its quality against the parent and its profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from infaas.cluster.base import WorkerHandle
from infaas.hardware import HardwareKind, local_kind
from infaas.profiler import quality as Q
from infaas.profiler.inputs import synthesize
from infaas.registry import Architecture, Profile, Registry, Variant
from infaas.registry.onnxinfo import load_validation, named_inputs
from infaas.registry.types import linear_fit
from infaas.settings import Settings
from infaas.variants.artifact import Artifact, calibration_split


@dataclass
class Measurement:
    artifact: Artifact
    provider: str
    threads: int
    evaluate: bool = False  # answer the evaluation inputs (one configuration per artifact)
    min_throughput: float = 0.0  # ... unless slower than this (the parent): no accuracy makes it worth it
    result: dict | None = None
    error: str = ""
    kind: HardwareKind | None = None  # the measuring worker's hardware kind, and its node
    node: str = ""

    @property
    def throughput(self) -> float:
        if self.result is None:
            return 0.0
        return max(b / float(np.median(runs)) * 1000 for b, runs in self.result["latency_ms"].items())


@dataclass
class Evaluation:
    """What the profiler evaluates on: inputs, labels when registered, and where they came from."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str  # validation | calibration | synthesized


def evaluation_data(registry: Registry, arch: Architecture, rows: int, axis_size: int = 128) -> Evaluation:
    """Labelled validation data when registered (quality is measured), else the calibration data past
    the rows the quantizer calibrated on, else inputs synthesized from the signature."""
    key = arch.validation_hash or arch.calibration_hash
    if key is None:
        inputs = synthesize(registry.models.path(arch.model_hash), arch.signature, min(rows, 512), axis_size)
        return Evaluation(inputs, None, "synthesized")
    inputs, labels = load_validation(registry.models.path(key).read_bytes(), need_labels=False)
    inputs = named_inputs(inputs, arch.signature)
    n = len(next(iter(inputs.values())))
    if arch.validation_hash:  # labelled: measure on all of it (up to ``rows``)
        return Evaluation(
            {k: v[:rows] for k, v in inputs.items()}, None if labels is None else labels[:rows], "validation"
        )
    start = calibration_split(n) if n > 1 else 0  # unlabelled: the rows the quantizer did not calibrate on
    return Evaluation({k: v[start : start + rows] for k, v in inputs.items()}, None, "calibration")


async def measure_on_worker(
    m: Measurement,
    new_worker: Callable[[str], WorkerHandle],
    registry: Registry,
    arch: Architecture,
    data: Evaluation,
    batches: list[int],
    repeats: int,
    warmup: int,
    metric: str,
    axis: dict | None,
    min_time_ms: float = 0.0,
) -> None:
    """Measure ``m`` in a fresh worker from ``new_worker`` (the backend's: on its hardware and node)."""
    worker = new_worker(f"profiler-{m.artifact.format}-{m.provider}-t{m.threads}")
    try:
        await worker.start()
        m.kind, m.node = worker.kind or local_kind(), worker.node
        m.result = await worker.profile(
            {
                "path": str(registry.models.path(m.artifact.key)),
                "threads": m.threads,
                "inputs": data.inputs,
                "provider": m.provider,
                "format": m.artifact.format,
                "options": m.artifact.params,
                "batches": batches,
                "repeats": repeats,
                "warmup": warmup,
                "min_time_ms": min_time_ms,
                "signature": arch.signature,
                "evaluate": metric if m.evaluate else None,
                "axis": axis,
                "evaluate_min_throughput": m.min_throughput,
            }
        )
    except Exception as exc:  # a crash, OOM or load failure fails this configuration only
        m.error = f"profiling failed: {exc}"
    finally:
        await worker.stop()


def quality_of(
    metric: str, m: Measurement, parent: Measurement, data: Evaluation, arch: Architecture
) -> Q.Quality | None:
    """The quality of ``m``'s artifact, paired against the parent's answers on the same inputs (None:
    not evaluated, being slower than the parent)."""
    r, pr = m.result, parent.result
    assert r is not None and pr is not None
    if "not_evaluated" in r:
        return None
    n = len(next(iter(data.inputs.values())))
    # the parent's own graph in the parent's runtime (on any provider); the same graph run by another
    # runtime or at another precision (OpenVINO's ov-fp32 and ov-bf16) is judged on its answers
    is_parent = m.artifact.key == parent.artifact.key and m.artifact.format == parent.artifact.format
    if metric != "top1":
        return Q.reference(1.0, n) if is_parent else Q.fidelity(r["outputs"], pr["outputs"], metric)
    pred, parent_pred = np.asarray(r["predictions"]), np.asarray(pr["predictions"])
    if data.labels is not None:
        q = Q.top1_measured(pred, parent_pred, data.labels)
        return replace(q, loss=0.0, loss_high=0.0) if is_parent else q
    if is_parent:
        return Q.reference(arch.accuracy, 0, arch.accuracy_source if arch.accuracy is not None else "unknown")
    top = None if pr["top_classes"] is None else (np.asarray(pr["top_classes"]), np.asarray(pr["top_probs"]))
    return Q.top1_estimated(pred, top, parent_pred, arch.accuracy if arch.accuracy is not None else 1.0)


def variant_profile(
    v: Variant,
    m: Measurement,
    q: Q.Quality | None,
    arch: Architecture,
    settings: Settings,
    kind: str,
    metric: str,
    axis: str,
) -> tuple[Profile, Variant]:
    r = m.result
    assert r is not None
    lat = {b: runs for b, runs in r["latency_ms"].items() if b <= v.max_batch}
    batches = sorted(lat)
    p50 = {b: float(np.percentile(lat[b], 50)) for b in batches}
    p99 = {b: float(np.percentile(lat[b], 99)) for b in batches}
    slope, intercept = linear_fit(batches, [p50[b] for b in batches])
    best = max(batches, key=lambda b: b / p50[b])
    throughput = best / p50[best] * 1000
    hourly = settings.price_gpu_hour if v.provider != "cpu" else settings.price_cpu_core_hour * v.threads
    cost = hourly / 3600 / throughput * 1000
    # top-1 estimated without a known parent accuracy: the loss is known, the accuracy is not
    unknown = q is None or (q.source == "estimated" and arch.accuracy is None) or (q.source == "unknown")
    accuracy = None if unknown else q.value
    source = "unknown" if unknown else q.source
    profile = Profile(
        variant=v.name,
        hardware=kind,
        node=m.node,
        metric=metric,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        fit_slope_ms=slope,
        fit_intercept_ms=intercept,
        throughput=throughput,
        peak_memory_mb=max(0.0, r["memory_mb"]),
        load_time_ms=r["load_time_s"] * 1000,
        accuracy=accuracy,
        accuracy_source=source,  # type: ignore[arg-type]
        accuracy_low=None if accuracy is None else q.low,
        accuracy_high=None if accuracy is None else q.high,
        samples=0 if q is None else q.samples,
        loss=None if q is None else q.loss,
        loss_high=None if q is None else q.loss_high,
        agreement=None if q is None else q.agreement,
        cost_per_1k=cost,
        best_batch=best,
        axis=axis,
        axis_latency_ms=r.get("axis_latency_ms") or {},
    )
    return profile, v.model_copy(
        update={"accuracy": accuracy, "accuracy_source": source, "status": "ready", "reason": ""}
    )
