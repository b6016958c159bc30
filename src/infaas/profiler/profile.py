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
from dataclasses import dataclass, field

import numpy as np

from infaas.cluster.base import ClusterBackend, WorkerHandle
from infaas.cluster.local import measuring_worker
from infaas.hardware import local_kind
from infaas.profiler import quality as Q
from infaas.profiler.inputs import axis_sizes, axis_spec, dynamic_axes
from infaas.profiler.measure import (
    Evaluation,
    Measurement,
    evaluation_data,
    measure_on_worker,
    quality_of,
    variant_profile,
)
from infaas.profiler.search import search_recipes
from infaas.profiler.verdict import judge
from infaas.registry import Architecture, Profile, Registry, Variant
from infaas.settings import Settings
from infaas.variants.artifact import Artifact, Skipped
from infaas.variants.generate import (
    cuda_available,
    generate_artifacts,
    plan_variants,
    powers_of_two,
)
from infaas.variants.quantize import DEFAULT_RECIPES

Progress = Callable[[str, int, int], None]  # (what, done, total)


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


async def _quality_and_search(
    evaluated: dict[str, Measurement],
    qualities: dict[str, Q.Quality | None],
    report: ProfileReport,
    quality: Callable[[Measurement], Q.Quality | None],
    search: Callable,
) -> None:
    """Each evaluated artifact's quality against the parent; a quantized format that loses too
    much gets a recipe search (its best measurement replaces the default's)."""
    for fmt, m in list(evaluated.items()):
        if m.result is None:
            continue
        qualities[fmt] = quality(m)
        if fmt in DEFAULT_RECIPES:
            best, q, log = await search(fmt, m, qualities[fmt])
            evaluated[fmt], qualities[fmt] = best, q
            report.searches[fmt] = log


def _plan(
    registry: Registry,
    arch: Architecture,
    artifacts: list[Artifact],
    max_threads: int,
    gpu: bool,
    report: ProfileReport,
) -> list[Variant]:
    """The variants of these artifacts (threads x max batch), each with its format's search log;
    new ones stored now, so a failure later leaves them registered."""
    planned = plan_variants(arch, artifacts, max_threads, arch.max_batch, gpu=gpu)
    planned = [
        v.model_copy(update={"params": {**v.params, "search": report.searches[v.format]}})
        if v.format in report.searches
        else v
        for v in planned
    ]
    existing = {v.name for v in registry.variants(arch.name)}
    for v in (v for v in planned if v.name not in existing):
        registry.put_variant(v)
    return planned


async def _evaluate(
    artifacts: list[Artifact],
    threads: int,
    data: Evaluation,
    settings: Settings,
    measure: Callable[[Measurement], Awaitable[None]],
    say: Callable[[str, int], None],
) -> dict[str, Measurement]:
    """Each artifact measured and answering the evaluation inputs once, at ``threads``, the parent
    (fp32) first: forms at under half its speed are timed, not evaluated."""
    evaluated: dict[str, Measurement] = {}
    floor = 0.0
    for i, art in enumerate(artifacts):
        say(f"measuring {art.format} with {threads} thread(s), answering {data.origin} inputs", i)
        evaluated[art.format] = m = Measurement(art, "cpu", threads, evaluate=True, min_throughput=floor)
        await measure(m)
        if art.format == "onnx-fp32" and m.result is not None:
            floor = _worth_evaluating(m, settings.timing_floor_ms)
    return evaluated


def _worth_evaluating(parent: Measurement, timing_floor_ms: float) -> float:
    """The throughput under which a quantized form is not worth evaluating: half its parent's, with
    the timing noise floor counted against both, so only real gaps skip an evaluation."""
    runs = parent.result["latency_ms"]
    best = max(runs, key=lambda b: b / float(np.median(runs[b])))
    return 1000 / (2 * (1000 / parent.throughput + timing_floor_ms / best) + timing_floor_ms)


async def _time_configs(
    todo: list[tuple[str, str, int]],
    artifacts: list[Artifact],
    by_config: dict[tuple[str, str, int], Measurement],
    qualities: dict[str, Q.Quality | None],
    parent: Measurement | None,
    measure: Callable[[Measurement], Awaitable[None]],
    quality: Callable[[Measurement], Q.Quality | None],
    say: Callable[[str, int], None],
) -> None:
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


def _judge_and_store(
    registry: Registry,
    report: ProfileReport,
    planned: list[Variant],
    by_config: dict[tuple[str, str, int], Measurement],
    qualities: dict[str, Q.Quality | None],
    evaluated: dict[str, Measurement],
    arch: Architecture,
    settings: Settings,
    max_threads: int,
    metric: str,
    axis_text: str,
) -> None:
    """Each planned variant's profile from its measurement and quality, the verdicts side by side
    (:func:`~infaas.profiler.verdict.judge`), and every variant and profile stored in one transaction (all or none)."""
    measured = next((m.kind for m in by_config.values() if m.kind is not None), None)
    kind = measured or local_kind()  # the measuring workers' kind (the backend's hardware)
    report.kind = kind.id
    updated = []
    for v in planned:
        m = by_config[(v.format, v.provider, v.threads)]
        if m.result is None:
            updated.append(v.model_copy(update={"status": "failed", "reason": m.error}))
            continue
        q = qualities.get(f"{v.format}@{v.provider}") or qualities.get(v.format)
        profile, v = variant_profile(v, m, q, arch, settings, kind.for_provider(v.provider), metric, axis_text)
        report.profiles[v.name] = profile
        skipped_eval = evaluated.get(v.format) and (evaluated[v.format].result or {}).get("not_evaluated")
        if q is None and skipped_eval:  # slower than its parent where it was evaluated: not worth keeping
            v = v.model_copy(update={"status": "rejected", "reason": f"{skipped_eval} at {max_threads} thread(s)"})
        updated.append(v)
    report.variants = judge(updated, report.profiles, settings)
    for v in report.variants:
        if v.name in report.profiles:
            report.profiles[v.name] = report.profiles[v.name].model_copy(
                update={"status": v.status, "reason": v.reason}
            )
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


def _max_threads(settings: Settings, backend: ClusterBackend | None) -> int:
    """The most threads a variant gets: a worker's cores (the backend's, else ``cores_per_worker``, else
    an even share of this machine's)."""
    if backend is not None:
        return max(1, backend.cores_per_worker)
    cores = len(os.sched_getaffinity(0))
    return min(settings.cores_per_worker or max(1, cores // settings.workers), cores)


def _measurer(
    registry: Registry,
    arch: Architecture,
    metric: str,
    settings: Settings,
    quick: bool,
    before_measure: Callable[[], Awaitable[object]] | None,
    new_worker: Callable[[str], WorkerHandle],
) -> tuple[Evaluation, str, Callable[[Measurement], Awaitable[None]]]:
    """The evaluation inputs, the dynamic axes as text, and how one measurement runs (batches 1, 2,
    4 ... max batch; fewer repeats when ``quick``; after ``before_measure``)."""
    data = evaluation_data(
        registry, arch, min(settings.eval_rows, 1024 if quick else settings.eval_rows), settings.profile_axis_size
    )
    dims = dynamic_axes(arch.signature)
    axis = {"dims": dims, "sizes": axis_sizes(settings.profile_axis_size)} if dims else None
    batches = powers_of_two(arch.max_batch)
    # a floor of time per batch size as well as of runs: 4 runs of a 20 µs model are 80 µs, which one
    # scheduler hiccup on a busy machine turns into a median ten times too slow (and a flipped verdict)
    repeats, warmup, min_time_ms = (4, 1, 20.0) if quick else (12, 2, 100.0)

    async def measure(m: Measurement) -> None:
        if before_measure is not None:
            await before_measure()
        await measure_on_worker(
            m, new_worker, registry, arch, data, batches, repeats, warmup, metric, axis, min_time_ms
        )

    return data, axis_spec(arch.signature), measure


async def profile_architecture(
    registry: Registry,
    name: str,
    settings: Settings,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    generate: Callable[..., tuple[list[Artifact], list[Skipped]]] = generate_artifacts,
    before_measure: Callable[[], Awaitable[object]] | None = None,
    backend: ClusterBackend | None = None,
) -> ProfileReport:
    """Generate (with ``generate``), measure and judge every variant of an architecture; persists
    variants and profiles. Measurements run in fresh workers from ``backend`` (on its hardware and
    node: a Ray backend measures on a worker's node), else in worker processes on this machine.
    ``before_measure`` is awaited before each measurement (a server waits out its loads, which
    calibrate at full speed meanwhile)."""
    started = time.monotonic()
    say = progress or (lambda what, done, total: None)
    arch, metric, kind = *_architecture_and_metric(registry, name), local_kind()
    say("generating variants", 0, 1)
    gpu, runtimes, told = cuda_available(), tuple(settings.runtimes), lambda msg: say(msg, 0, 1)
    artifacts, skipped = await asyncio.to_thread(generate, registry, arch, gpu=gpu, progress=told, runtimes=runtimes)
    max_threads = _max_threads(settings, backend)
    new_worker = backend.measuring_worker if backend is not None else measuring_worker
    data, axis_text, measure = _measurer(registry, arch, metric, settings, quick, before_measure, new_worker)
    # 1. each artifact answers once, at the most threads; the parent first
    report = ProfileReport(name, skipped=skipped, kind=kind.id, metric=metric)
    qualities: dict[str, Q.Quality | None] = {}
    cpu_arts = [a for a in artifacts if a.format != "onnx-fp16"]
    steps = len(cpu_arts) * len(powers_of_two(max_threads))
    evaluated = await _evaluate(cpu_arts, max_threads, data, settings, measure, lambda what, i: say(what, i, steps))
    parent = evaluated.get("onnx-fp32")
    if parent is not None and parent.result is not None:

        def quality(x: Measurement) -> Q.Quality | None:
            return quality_of(metric, x, parent, data, arch)

        async def search(fmt: str, m: Measurement, q: Q.Quality | None):
            return await search_recipes(
                fmt,
                m,
                parent,
                q,
                registry,
                arch,
                settings,
                measure,
                quality,
                lambda msg: say(msg, len(cpu_arts) - 1, steps),
            )

        await _quality_and_search(evaluated, qualities, report, quality, search)
    final = [evaluated[a.format].artifact if a.format in evaluated else a for a in artifacts]
    planned = _plan(registry, arch, final, max_threads, gpu, report)

    # 3. the other configurations: timing only (answers do not change with threads)
    by_config = {(m.artifact.format, m.provider, m.threads): m for m in evaluated.values()}
    todo = sorted(
        {(v.format, v.provider, v.threads) for v in planned} - set(by_config), key=lambda c: (c[1], c[0], c[2])
    )
    await _time_configs(
        todo,
        final,
        by_config,
        qualities,
        parent,
        measure,
        lambda m: quality_of(metric, m, parent, data, arch),
        lambda what, j: say(what, len(cpu_arts) + j, len(cpu_arts) + len(todo)),
    )
    say("judging", len(cpu_arts) + len(todo), len(cpu_arts) + len(todo))

    _judge_and_store(
        registry, report, planned, by_config, qualities, evaluated, arch, settings, max_threads, metric, axis_text
    )
    report.seconds = time.monotonic() - started
    total = len(cpu_arts) + len(todo)
    say("done", total, total)
    return report
