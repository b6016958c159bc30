"""The profiler: measure every variant of an architecture in isolated worker processes.

One fresh worker process per (format, threads) configuration: it loads the artifact, times one
batch at 1, 2, 4 … the architecture's max batch (every run kept, after warm-up), and over a
dynamic axis where the inputs have one, and records load time and the resident memory the variant
added. Each artifact answers the evaluation inputs once, at the most threads (answers do not depend
on the thread count): its quality in the task's metric, paired against the parent's answers, with
an interval (``infaas.profiler.quality``). A crash or an out-of-memory kill fails that
configuration's variants and nothing else.

When a quantized format's default recipe loses more than the bound, the profiler searches further
recipes within ``quant_search_s`` (``infaas.variants.generate.SEARCH_STEPS``, then the most
sensitive nodes kept in fp32) and keeps the fastest that meets the bound; every recipe tried is
recorded with its outcome in the variants' ``params["search"]``.

Every profile records the hardware kind it was measured on (``infaas.hardware``). Variants whose
loss may exceed the bound, or that another variant beats clearly on latency, throughput, accuracy
and cost at once, are kept as ``rejected`` with the reason, on that kind.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from infaas.cluster.local_worker import LocalWorker
from infaas.hardware import local_kind
from infaas.profiler import quality as Q
from infaas.profiler.inputs import axis_sizes, dynamic_axes, synthesize
from infaas.profiler.verdict import judge
from infaas.registry import Architecture, Profile, Registry, Variant
from infaas.registry.onnxinfo import load_validation, named_inputs
from infaas.registry.types import linear_fit
from infaas.settings import Settings
from infaas.variants.generate import (
    DEFAULT_RECIPES,
    SEARCH_STEPS,
    Artifact,
    Quantizer,
    Skipped,
    calibration_split,
    cuda_available,
    describe_recipe,
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
    evaluate: bool = False  # answer the evaluation inputs (one configuration per artifact)
    min_throughput: float = 0.0  # ... unless slower than this (the parent): no accuracy makes it worth it
    result: dict | None = None
    error: str = ""

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


@dataclass
class ProfileReport:
    architecture: str
    variants: list[Variant] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    searches: dict[str, list[dict]] = field(default_factory=dict)  # format -> recipes tried
    kind: str = ""
    metric: str = "top1"
    seconds: float = 0.0


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
        return Evaluation({k: v[:rows] for k, v in inputs.items()}, None if labels is None else labels[:rows],
                          "validation")  # fmt: skip
    start = calibration_split(n) if n > 1 else 0  # unlabelled: the rows the quantizer did not calibrate on
    return Evaluation({k: v[start : start + rows] for k, v in inputs.items()}, None, "calibration")


async def _measure(m: Measurement, registry: Registry, arch: Architecture, data: Evaluation, batches: list[int],
                   repeats: int, warmup: int, metric: str, axis: dict | None) -> None:  # fmt: skip
    worker = LocalWorker(f"profiler-{m.artifact.format}-{m.provider}-t{m.threads}", tuple(sorted(os.sched_getaffinity(0))),
                         restart=False)  # fmt: skip
    try:
        await worker.start()
        m.result = await worker.profile({
            "path": str(registry.models.path(m.artifact.key)), "threads": m.threads, "inputs": data.inputs,
            "provider": m.provider, "batches": batches, "repeats": repeats, "warmup": warmup,
            "signature": arch.signature, "evaluate": metric if m.evaluate else None, "axis": axis,
            "evaluate_min_throughput": m.min_throughput,
        })  # fmt: skip
    except Exception as exc:  # a crash, OOM or load failure fails this configuration only
        m.error = f"profiling failed: {exc}"
    finally:
        await worker.stop()


def _quality(metric: str, m: Measurement, parent: Measurement, data: Evaluation,
             arch: Architecture) -> Q.Quality | None:  # fmt: skip
    """The quality of ``m``'s artifact, paired against the parent's answers on the same inputs (None:
    not evaluated, being slower than the parent)."""
    r, pr = m.result, parent.result
    assert r is not None and pr is not None
    if "not_evaluated" in r:
        return None
    n = len(next(iter(data.inputs.values())))
    is_parent = m.artifact.key == parent.artifact.key
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


def _variant_profile(v: Variant, m: Measurement, q: Q.Quality | None, arch: Architecture, settings: Settings,
                     kind: str, metric: str, axis: str) -> tuple[Profile, Variant]:  # fmt: skip
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
        variant=v.name, hardware=kind, metric=metric, latency_p50_ms=p50, latency_p99_ms=p99, fit_slope_ms=slope,
        fit_intercept_ms=intercept, throughput=throughput, peak_memory_mb=max(0.0, r["memory_mb"]),
        load_time_ms=r["load_time_s"] * 1000, accuracy=accuracy, accuracy_source=source,  # type: ignore[arg-type]
        accuracy_low=None if accuracy is None else q.low, accuracy_high=None if accuracy is None else q.high,
        samples=0 if q is None else q.samples, loss=None if q is None else q.loss,
        loss_high=None if q is None else q.loss_high, agreement=None if q is None else q.agreement,
        cost_per_1k=cost, best_batch=best, axis=axis, axis_latency_ms=r.get("axis_latency_ms") or {},
    )  # fmt: skip
    return profile, v.model_copy(update={"accuracy": accuracy, "accuracy_source": source, "status": "ready",
                                         "reason": ""})  # fmt: skip


def _trial(recipe: dict, m: Measurement, q: Q.Quality | None, bound: float, verdict: str = "") -> dict:
    if not verdict:
        verdict = ("meets the bound" if q is not None and q.within(bound) else
                   f"loses up to {q.loss_high:.4f}" if q is not None else
                   (m.result or {}).get("not_evaluated") or m.error or "failed")  # fmt: skip
    return {"recipe": describe_recipe(recipe), "params": recipe, "throughput": round(m.throughput, 1),
            "loss": None if q is None else round(q.loss, 5), "loss_high": None if q is None else round(q.loss_high, 5),
            "verdict": verdict}  # fmt: skip


async def _search(fmt: str, default: Measurement, parent: Measurement, q0: Q.Quality | None, registry: Registry,
                  arch: Architecture, settings: Settings, measure: Callable, quality: Callable,
                  say: Callable[[str], None]) -> tuple[Measurement, Q.Quality | None, list[dict]]:  # fmt: skip
    """Recipes beyond the default, within the time budget; the fastest that meets the bound and is
    faster than fp32 wins. Mixed precision starts from the least lossy recipe faster than fp32."""
    bound = settings.max_accuracy_drop
    base = dict(default.artifact.params.get("recipe") or DEFAULT_RECIPES[fmt])
    log = [_trial(base, default, q0, bound)]
    if q0 is None or q0.within(bound) or settings.quant_search_s <= 0:
        return default, q0, log
    if default.throughput <= parent.throughput:
        log.append({"recipe": "(search)", "verdict": f"not searched: the default recipe is slower than fp32 "
                    f"({default.throughput:.0f} vs {parent.throughput:.0f} rows/s); no recipe makes it worth keeping"})  # fmt: skip
        return default, q0, log
    deadline = time.monotonic() + settings.quant_search_s
    passing: list[tuple[Measurement, Q.Quality]] = []
    lowest: tuple[float, dict, Measurement] = (q0.loss_high, base, default)
    with Quantizer(registry, arch) as quantizer:

        async def attempt(recipe: dict) -> tuple[Measurement, Q.Quality] | None:
            nonlocal lowest
            say(f"{fmt}: trying {describe_recipe(recipe)}")
            try:
                art = await asyncio.to_thread(quantizer.quantize, fmt, recipe)
            except ValueError as exc:
                log.append({"recipe": describe_recipe(recipe), "params": recipe, "verdict": str(exc)})
                return None
            m = Measurement(art, default.provider, default.threads, evaluate=True, min_throughput=default.min_throughput)
            await measure(m)
            if m.result is None:
                log.append(_trial(recipe, m, None, bound))
                return None
            q = quality(m)
            faster = m.throughput > parent.throughput
            slow = "" if faster or q is None or not q.within(bound) else (
                f"meets the bound but no faster than fp32 ({m.throughput:.0f} vs {parent.throughput:.0f} rows/s)")
            log.append(_trial(recipe, m, q, bound, slow))
            if q is None or not faster:  # a recipe slower than fp32 cannot win, nor seed mixed precision
                return None
            if q.loss_high < lowest[0]:
                lowest = (q.loss_high, recipe, m)
            return (m, q) if q.within(bound) else None

        for step in SEARCH_STEPS[fmt]:
            if time.monotonic() > deadline:
                log.append({"recipe": "(search)", "verdict": f"time budget of {settings.quant_search_s:.0f} s spent"})
                break
            if (hit := await attempt({**base, **step})) is not None:
                passing.append(hit)
        if not passing and time.monotonic() <= deadline:
            # mixed precision: the most sensitive nodes of the least lossy recipe stay in fp32
            _, recipe, m = lowest
            ranking = await asyncio.to_thread(quantizer.sensitivity, fmt, m.artifact)
            if not ranking and m is not default:  # that recipe quantizes nothing computed inside: the default's
                recipe, ranking = base, await asyncio.to_thread(quantizer.sensitivity, fmt, default.artifact)
            log.append({"recipe": "(sensitivity)", "verdict": "most sensitive nodes: " + ", ".join(
                f"{'+'.join(names)} (+{score:.3f})" for names, score in ranking[:8])})  # fmt: skip
            k = 1
            while k <= min(len(ranking), 64) and not passing:
                if time.monotonic() > deadline:
                    log.append({"recipe": "(search)", "verdict": f"time budget of {settings.quant_search_s:.0f} s spent"})
                    break
                if (hit := await attempt({**recipe, "exclude": [name for names, _ in ranking[:k] for name in names]})) is not None:
                    passing.append(hit)
                k *= 2
    if not passing:
        return default, q0, log
    m, q = max(passing, key=lambda hit: hit[0].throughput)
    log.append({"recipe": m.artifact.params["recipe_text"], "verdict": "kept: the fastest recipe that meets the bound"})
    return m, q, log


def _worth_evaluating(parent: Measurement, timing_floor_ms: float) -> float:
    """The throughput under which a quantized form is not worth evaluating: half its parent's, with
    the timing noise floor counted against both, so only real gaps skip an evaluation."""
    runs = parent.result["latency_ms"]
    best = max(runs, key=lambda b: b / float(np.median(runs[b])))
    return 1000 / (2 * (1000 / parent.throughput + timing_floor_ms / best) + timing_floor_ms)


async def _time_configs(todo: list[tuple[str, str, int]], artifacts: list[Artifact],
                        by_config: dict[tuple[str, str, int], Measurement], qualities: dict[str, Q.Quality | None],
                        parent: Measurement | None, measure: Callable[[Measurement], Awaitable[None]],
                        quality: Callable[[Measurement], Q.Quality | None],
                        say: Callable[[str, int], None]) -> None:  # fmt: skip
    """Measure each (format, provider, threads) configuration not measured yet: timing only on the
    CPU (answers do not change with threads); another provider's answers are evaluated too."""
    by_format = {a.format: a for a in artifacts}
    for j, (fmt, provider, threads) in enumerate(todo):
        say(f"measuring {fmt} on {provider} with {threads} thread(s)", j)
        m = Measurement(by_format[fmt], provider, threads, evaluate=provider != "cpu" and parent is not None)
        await measure(m)
        by_config[(fmt, provider, threads)] = m
        if m.evaluate and m.result is not None and parent is not None and parent.result is not None:
            qualities[f"{fmt}@{provider}"] = quality(m)


def _judge_and_store(registry: Registry, report: ProfileReport, planned: list[Variant],
                     by_config: dict[tuple[str, str, int], Measurement], qualities: dict[str, Q.Quality | None],
                     evaluated: dict[str, Measurement], arch: Architecture, settings: Settings, max_threads: int,
                     metric: str, axis_text: str) -> None:  # fmt: skip
    """Each planned variant's profile from its measurement and quality, the verdicts side by side
    (:func:`~infaas.profiler.verdict.judge`), and every variant and profile stored in one transaction (all or none)."""
    kind = local_kind()
    updated = []
    for v in planned:
        m = by_config[(v.format, v.provider, v.threads)]
        if m.result is None:
            updated.append(v.model_copy(update={"status": "failed", "reason": m.error}))
            continue
        q = qualities.get(f"{v.format}@{v.provider}") or qualities.get(v.format)
        profile, v = _variant_profile(v, m, q, arch, settings, kind.for_provider(v.provider), metric, axis_text)
        report.profiles[v.name] = profile
        skipped_eval = (evaluated.get(v.format) and (evaluated[v.format].result or {}).get("not_evaluated"))
        if q is None and skipped_eval:  # slower than its parent where it was evaluated: not worth keeping
            v = v.model_copy(update={"status": "rejected", "reason": f"{skipped_eval} at {max_threads} thread(s)"})
        updated.append(v)
    report.variants = judge(updated, report.profiles, settings)
    for v in report.variants:
        if v.name in report.profiles:
            report.profiles[v.name] = report.profiles[v.name].model_copy(update={"status": v.status, "reason": v.reason})
    with registry.store.transaction():  # every variant and profile of the report, or none
        for v in report.variants:
            registry.put_variant(v)
            if v.name in report.profiles:
                registry.put_profile(report.profiles[v.name])


def _architecture_and_metric(registry: Registry, name: str) -> tuple[Architecture, str]:
    arch = registry.architecture(name)
    if arch is None:
        from infaas.errors import NotFound

        raise NotFound(f"unknown architecture {name!r}")
    task = registry.task(arch.task)
    return arch, task.metric if task is not None else "top1"


def _max_threads(settings: Settings) -> int:
    """The most threads a variant gets: a worker's cores (``cores_per_worker``, else an even share)."""
    cores = len(os.sched_getaffinity(0))
    return min(settings.cores_per_worker or max(1, cores // settings.workers), cores)


async def profile_architecture(
    registry: Registry, name: str, settings: Settings, *, quick: bool = False, progress: Progress | None = None,
    generate: Callable[..., tuple[list[Artifact], list[Skipped]]] = generate_artifacts,
    before_measure: Callable[[], Awaitable[object]] | None = None,
) -> ProfileReport:
    """Generate (with ``generate``), measure and judge every variant of an architecture on this
    machine's hardware kind; persists variants and profiles. ``before_measure`` is awaited before
    each measurement (a server waits out its loads, which calibrate at full speed meanwhile)."""
    started = time.monotonic()
    say = progress or (lambda what, done, total: None)
    arch, metric = _architecture_and_metric(registry, name)
    kind = local_kind()
    say("generating variants", 0, 1)
    gpu = cuda_available()
    artifacts, skipped = await asyncio.to_thread(generate, registry, arch, gpu=gpu,
                                                 progress=lambda msg: say(msg, 0, 1))  # fmt: skip
    max_threads = _max_threads(settings)
    data = evaluation_data(registry, arch, min(settings.eval_rows, 1024 if quick else settings.eval_rows),
                           settings.profile_axis_size)  # fmt: skip
    dims = dynamic_axes(arch.signature)
    axis = {"dims": dims, "sizes": axis_sizes(settings.profile_axis_size)} if dims else None
    axis_text = ", ".join(f"{k}[{d}]" for k, d in dims.items())
    batches = powers_of_two(arch.max_batch)
    repeats, warmup = (4, 1) if quick else (12, 2)

    async def measure(m: Measurement) -> None:
        if before_measure is not None:
            await before_measure()
        await _measure(m, registry, arch, data, batches, repeats, warmup, metric, axis)

    # 1. each artifact answers once, at the most threads; the parent first
    report = ProfileReport(name, skipped=skipped, kind=kind.id, metric=metric)
    evaluated: dict[str, Measurement] = {}
    qualities: dict[str, Q.Quality | None] = {}
    cpu_arts = [a for a in artifacts if a.format != "onnx-fp16"]
    steps = len(cpu_arts) * len(powers_of_two(max_threads))
    floor = 0.0
    for i, art in enumerate(cpu_arts):
        say(f"measuring {art.format} with {max_threads} thread(s), answering {data.origin} inputs", i, steps)
        evaluated[art.format] = m = Measurement(art, "cpu", max_threads, evaluate=True, min_throughput=floor)
        await measure(m)
        if art.format == "onnx-fp32" and m.result is not None:
            floor = _worth_evaluating(m, settings.timing_floor_ms)
    parent = evaluated.get("onnx-fp32")
    if parent is not None and parent.result is not None:
        for fmt, m in list(evaluated.items()):
            if m.result is None:
                continue
            qualities[fmt] = _quality(metric, m, parent, data, arch)
            if fmt in DEFAULT_RECIPES:  # 2. a quantized format that loses too much: search recipes
                best, q, log = await _search(fmt, m, parent, qualities[fmt], registry, arch, settings, measure,
                                             lambda x: _quality(metric, x, parent, data, arch),
                                             lambda msg: say(msg, i, steps))  # fmt: skip
                evaluated[fmt], qualities[fmt] = best, q
                report.searches[fmt] = log
    final = [evaluated[a.format].artifact if a.format in evaluated else a for a in artifacts]
    planned = plan_variants(arch, final, max_threads, arch.max_batch, gpu=gpu)
    planned = [v.model_copy(update={"params": {**v.params, "search": report.searches[v.format]}})
               if v.format in report.searches else v for v in planned]  # fmt: skip
    existing = {v.name for v in registry.variants(name)}
    for v in (v for v in planned if v.name not in existing):
        registry.put_variant(v)

    # 3. the other configurations: timing only (answers do not change with threads)
    by_config = {(m.artifact.format, m.provider, m.threads): m for m in evaluated.values()}
    todo = sorted({(v.format, v.provider, v.threads) for v in planned} - set(by_config), key=lambda c: (c[1], c[0], c[2]))
    await _time_configs(todo, final, by_config, qualities, parent, measure,
                        lambda m: _quality(metric, m, parent, data, arch),
                        lambda what, j: say(what, len(cpu_arts) + j, len(cpu_arts) + len(todo)))  # fmt: skip
    say("judging", len(cpu_arts) + len(todo), len(cpu_arts) + len(todo))

    _judge_and_store(registry, report, planned, by_config, qualities, evaluated, arch, settings,
                     max_threads, metric, axis_text)  # fmt: skip
    report.seconds = time.monotonic() - started
    total = len(cpu_arts) + len(todo)
    say("done", total, total)
    return report
