"""The profiler: measure every variant of an architecture in isolated worker processes.

One fresh worker process per (format, threads) configuration: it loads the artifact, times one
batch at 1, 2, 4 … the architecture's max batch (every run kept, after warm-up), records load
time and the resident memory the variant added, and answers the evaluation inputs. A crash or an
out-of-memory kill fails that configuration's variants and nothing else. From those runs each
variant (a configuration capped at a max batch) gets a profile: p50/p99 per batch, the linear fit
latency(b) = slope*b + intercept, throughput at its best batch, memory, load time, accuracy with
its provenance, agreement with the parent, and cost per 1000 inferences. Variants that lose too
much accuracy, or that another variant beats on latency, throughput, accuracy and cost at once,
are kept as ``rejected`` with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from infaas.cluster.local import LocalWorker
from infaas.registry import Architecture, Profile, Registry, Variant
from infaas.registry.onnxinfo import load_validation, named_inputs
from infaas.registry.types import linear_fit
from infaas.settings import Settings
from infaas.variants.generate import (
    Artifact,
    Skipped,
    cuda_available,
    generate_artifacts,
    plan_variants,
    powers_of_two,
)

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Measurement:
    artifact: Artifact
    provider: str
    threads: int
    result: dict | None = None
    error: str = ""


@dataclass
class ProfileReport:
    architecture: str
    variants: list[Variant] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


def evaluation_data(registry: Registry, arch: Architecture, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Labelled validation data when registered (accuracy is measured), else the second half of the
    calibration data, which the quantizer did not see (accuracy is estimated from agreement)."""
    key = arch.validation_hash or arch.calibration_hash
    if key is None:
        shapes = {s.name: (1, *[d if d > 0 else 1 for d in s.shape[1:]]) for s in arch.signature.inputs}
        from infaas.tensors import V2_TO_NUMPY

        return {s.name: np.zeros(shapes[s.name], V2_TO_NUMPY[s.datatype]) for s in arch.signature.inputs}, None
    inputs, labels = load_validation(registry.models.path(key).read_bytes(), need_labels=False)
    inputs = named_inputs(inputs, arch.signature)
    n = len(next(iter(inputs.values())))
    if arch.validation_hash:  # labelled: measure on all of it (up to ``rows``)
        return {k: v[:rows] for k, v in inputs.items()}, labels[:rows]
    start = n // 2 if n > 1 else 0  # unlabelled: the half the quantizer did not calibrate on
    return {k: v[start : start + rows] for k, v in inputs.items()}, None


async def _measure(m: Measurement, registry: Registry, arch: Architecture, inputs: dict, batches: list[int],
                   repeats: int, warmup: int) -> None:  # fmt: skip
    worker = LocalWorker(f"profiler-{m.artifact.format}-{m.provider}-t{m.threads}", tuple(sorted(os.sched_getaffinity(0))),
                         restart=False)  # fmt: skip
    try:
        await worker.start()
        m.result = await worker.profile({
            "path": str(registry.models.path(m.artifact.key)), "threads": m.threads, "inputs": inputs,
            "provider": m.provider,
            "batches": batches, "repeats": repeats, "warmup": warmup, "signature": arch.signature,
        })  # fmt: skip
    except Exception as exc:  # a crash, OOM or load failure fails this configuration only
        m.error = f"profiling failed: {exc}"
    finally:
        await worker.stop()


def _variant_profile(v: Variant, m: Measurement, parent: Measurement | None, labels: np.ndarray | None,
                     arch: Architecture, settings: Settings) -> tuple[Profile, Variant]:  # fmt: skip
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
    preds = np.asarray(r["predictions"])
    agreement = None
    if parent is not None and parent.result is not None:
        parent_preds = np.asarray(parent.result["predictions"])
        agreement = float((preds == parent_preds).mean())
    if labels is not None:
        accuracy, source = float((preds == labels).mean()), "measured"
    elif v.format == "onnx-fp32":
        accuracy, source = arch.accuracy, arch.accuracy_source  # the registered graph itself
    elif arch.accuracy is not None and parent is not None and parent.result is not None:
        conf = parent.result["confidence"]
        sure = np.ones(len(preds), bool) if conf is None else np.asarray(conf) >= settings.confident_probability
        if not sure.any():
            sure[:] = True
        changed = float((preds[sure] != np.asarray(parent.result["predictions"])[sure]).mean())
        accuracy, source = max(0.0, arch.accuracy - changed), "estimated"
    else:
        accuracy, source = None, "unknown"
    profile = Profile(
        variant=v.name, hardware=v.provider, latency_p50_ms=p50, latency_p99_ms=p99, fit_slope_ms=slope,
        fit_intercept_ms=intercept, throughput=throughput, peak_memory_mb=max(0.0, r["memory_mb"]),
        load_time_ms=r["load_time_s"] * 1000, accuracy=accuracy, accuracy_source=source, agreement=agreement,
        cost_per_1k=cost, best_batch=best,
    )  # fmt: skip
    return profile, v.model_copy(update={"accuracy": accuracy, "accuracy_source": source, "status": "ready",
                                         "reason": ""})  # fmt: skip


def _judge(variants: list[Variant], profiles: dict[str, Profile], arch: Architecture, settings: Settings,
           reference: float | None) -> list[Variant]:  # fmt: skip
    """Reject variants that lose too much accuracy or that another variant beats on every count."""
    out = []
    for v in variants:
        p = profiles.get(v.name)
        if p is None or v.status != "ready":
            out.append(v)
            continue
        if reference is not None and p.accuracy is not None and reference - p.accuracy > settings.max_accuracy_drop:
            out.append(v.model_copy(update={"status": "rejected", "reason": (
                f"accuracy {p.accuracy:.3f} ({p.accuracy_source}) is {reference - p.accuracy:.3f} below the parent's "
                f"{reference:.3f}, over the bound of {settings.max_accuracy_drop}")}))  # fmt: skip
            continue
        out.append(v)
    ready = [v for v in out if v.status == "ready"]
    judged = []
    for v in out:
        p = profiles.get(v.name)
        if v.status != "ready" or p is None:
            judged.append(v)
            continue
        for o in ready:
            q = profiles[o.name]
            if o is v or o.max_batch != v.max_batch or o.provider != v.provider:
                continue
            if q.accuracy_source == "estimated" and p.accuracy_source in ("measured", "declared"):
                continue  # an estimate is weaker evidence than what it would displace
            acc_o, acc_v = (q.accuracy if q.accuracy is not None else -1), (p.accuracy if p.accuracy is not None else -1)
            no_worse = (q.latency_p50_ms[1] <= p.latency_p50_ms[1] and q.throughput >= p.throughput
                        and acc_o >= acc_v and q.cost_per_1k <= p.cost_per_1k)  # fmt: skip
            better = (q.latency_p50_ms[1] < p.latency_p50_ms[1] or q.throughput > p.throughput
                      or acc_o > acc_v or q.cost_per_1k < p.cost_per_1k)  # fmt: skip
            if no_worse and better:
                v = v.model_copy(update={"status": "rejected", "reason": (
                    f"dominated by {o.name}: p50@1 {q.latency_p50_ms[1]:.3g} vs {p.latency_p50_ms[1]:.3g} ms, "
                    f"{q.throughput:.0f} vs {p.throughput:.0f} rows/s, accuracy {acc_o:.3f} vs {acc_v:.3f}, "
                    f"cost/1k ${q.cost_per_1k:.6f} vs ${p.cost_per_1k:.6f}")})  # fmt: skip
                break
        judged.append(v)
    return judged


async def profile_architecture(
    registry: Registry, name: str, settings: Settings, *, quick: bool = False, progress: Progress | None = None,
    generate: Callable[..., tuple[list[Artifact], list[Skipped]]] = generate_artifacts,
) -> ProfileReport:
    """Generate (with ``generate``), measure and judge every variant of an architecture; persists
    variants and profiles."""
    started = time.monotonic()
    say = progress or (lambda what, done, total: None)
    arch = registry.architecture(name)
    if arch is None:
        from infaas.errors import NotFound

        raise NotFound(f"unknown architecture {name!r}")
    say("generating variants", 0, 1)
    gpu = cuda_available()
    artifacts, skipped = await asyncio.to_thread(generate, registry, arch, gpu=gpu,
                                                 progress=lambda msg: say(msg, 0, 1))  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    max_threads = min(settings.cores_per_worker or max(1, cores // settings.workers), cores)
    planned = plan_variants(arch, artifacts, max_threads, arch.max_batch, gpu=gpu)
    existing = {v.name: v for v in registry.variants(name)}
    for v in planned:
        if v.name not in existing:
            registry.put_variant(v)

    inputs, labels = evaluation_data(registry, arch, rows=1024 if quick else 4096)
    batches = powers_of_two(arch.max_batch)
    repeats, warmup = (4, 1) if quick else (12, 2)
    configs = sorted({(v.artifact_hash, v.format, v.provider, v.threads) for v in planned},
                     key=lambda c: (c[2], c[1], c[3]))  # fmt: skip
    by_format = {a.format: a for a in artifacts}
    measurements = [Measurement(by_format[fmt], provider, t) for _, fmt, provider, t in configs]
    for i, m in enumerate(measurements):
        say(f"measuring {m.artifact.format} on {m.provider} with {m.threads} thread(s)", i, len(measurements))
        await _measure(m, registry, arch, inputs, batches, repeats, warmup)
    say("judging", len(measurements), len(measurements))

    fp32 = [m for m in measurements if m.artifact.format == "onnx-fp32" and m.provider == "cpu"
            and m.result is not None]  # fmt: skip
    parent = max(fp32, key=lambda m: m.threads) if fp32 else None
    by_config = {(m.artifact.format, m.provider, m.threads): m for m in measurements}
    report = ProfileReport(name, skipped=skipped)
    updated = []
    for v in planned:
        m = by_config[(v.format, v.provider, v.threads)]
        if m.result is None:
            updated.append(v.model_copy(update={"status": "failed", "reason": m.error}))
            continue
        profile, v = _variant_profile(v, m, parent, labels, arch, settings)
        report.profiles[v.name] = profile
        updated.append(v)
    reference = arch.accuracy
    if labels is not None and parent is not None:
        reference = float((np.asarray(parent.result["predictions"]) == labels).mean())
    report.variants = _judge(updated, report.profiles, arch, settings, reference)
    with registry.store.transaction():  # every variant and profile of the report, or none
        for v in report.variants:
            registry.put_variant(v)
            if v.name in report.profiles:
                registry.put_profile(report.profiles[v.name])
    report.seconds = time.monotonic() - started
    say("done", len(measurements), len(measurements))
    return report
