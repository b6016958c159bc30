"""What the simulator serves: variants with their profiles, grouped by architecture and task.

Built from a real data directory with the server's own :class:`~infaas.catalog.Catalog` (the same
status, accuracy and profile per variant the router would see on this machine's hardware kind).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infaas.policy import Option, ScopeIndex
from infaas.registry import Profile, Variant
from infaas.registry.types import linear_fit
from infaas.sim.fleet import is_gpu


@dataclass
class SimCatalog:
    variants: dict[str, Variant]
    profiles: dict[str, Profile]
    tasks: dict[str, str]  # architecture -> task
    accuracy: dict[str, float | None] = field(default_factory=dict)  # architecture -> its accuracy
    hardware: str = ""  # the kind(s) the profiles were measured on
    kinds: dict[str, str] = field(default_factory=dict)  # variant -> the hardware kind it runs on ("": any)

    def __post_init__(self) -> None:
        self.by_arch: dict[str, list[Variant]] = {a: [] for a in self.tasks}
        for v in sorted(self.variants.values(), key=lambda v: (v.created_at, v.name)):  # as the server's Catalog
            self.by_arch.setdefault(v.architecture, []).append(v)
        self._index: dict[tuple[str, int], ScopeIndex] = {}

    @property
    def task_names(self) -> list[str]:
        return sorted(set(self.tasks.values()))

    def of_task(self, task: str) -> list[Variant]:
        return [v for a, t in sorted(self.tasks.items()) if t == task for v in self.by_arch.get(a, [])]

    def kind_of(self, name: str) -> str:
        return self.kinds.get(name, "")

    def options(self, task: str, fits: Callable[[Variant], bool]) -> ScopeIndex:
        """The task's ready, profiled variants for which ``fits`` holds (a pool runs them), by cost."""
        ready = [v for v in self.of_task(task) if v.status == "ready" and v.name in self.profiles and fits(v)]
        return ScopeIndex([Option(v, self.profiles[v.name]) for v in ready])

    def index(self, task: str, cores: int) -> ScopeIndex:
        """The task's ready, profiled variants sorted by cost: those a worker of ``cores`` runs as
        profiled (all of them if none fits), as the router's options."""
        key = (task, cores)
        if key not in self._index:
            ready = [v for v in self.of_task(task) if v.status == "ready" and v.name in self.profiles]
            fitting = [v for v in ready if v.threads <= cores] or ready
            self._index[key] = ScopeIndex([Option(v, self.profiles[v.name]) for v in fitting])
        return self._index[key]

    @classmethod
    def from_data_dir(cls, path: str | Path) -> SimCatalog:
        """The registry's variants with their profiles on this machine's hardware kind."""
        from infaas.catalog import Catalog
        from infaas.registry import Registry

        if not Path(path).is_dir():
            raise ValueError(f"--data-dir {path}: no such directory")
        registry = Registry.open(Path(path))
        try:
            cat = Catalog(registry)
            archs = cat.architectures
            return cls(
                variants=dict(cat.variants),
                profiles=dict(cat.profiles),
                tasks={a: arch.task for a, arch in archs.items()},
                accuracy={a: arch.accuracy for a, arch in archs.items()},
                hardware=cat.kind.id,
            )
        finally:
            registry.close()


SYNTHETIC_FIELDS: dict[str, float] = {"archs": 100, "variants": 20, "tasks": 10, "seed": 0, "scale": 1.0}


def parse_synthetic(spec: str) -> dict[str, float]:
    """``archs=100,variants=20,tasks=10,seed=0[,scale=1]`` (any subset; the rest default), with clear
    errors."""
    out = dict(SYNTHETIC_FIELDS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or key.strip() not in SYNTHETIC_FIELDS:
            raise ValueError(f"--synthetic: {part!r} is not key=value with key in {', '.join(SYNTHETIC_FIELDS)}")
        key = key.strip()
        try:
            out[key] = float(raw) if key == "scale" else int(raw)
        except ValueError:
            kind = "a number" if key == "scale" else "a whole number"
            raise ValueError(f"--synthetic: {key} must be {kind}, got {raw!r}") from None
    if not out["scale"] > 0:
        raise ValueError(f"--synthetic: scale must be positive, got {out['scale']:g}")
    for key in ("archs", "variants", "tasks"):
        if out[key] < 1:
            raise ValueError(f"--synthetic: {key} must be at least 1, got {out[key]}")
    if out["tasks"] > out["archs"]:
        raise ValueError(f"--synthetic: {out['tasks']} tasks need at least as many architectures ({out['archs']})")
    return out


def synthetic(
    archs: int = 100,
    variants: int = 20,
    tasks: int = 10,
    seed: int = 0,
    scale: float = 1.0,
    *,
    price_core_hour: float = 0.0425,
    rng: random.Random | None = None,
) -> SimCatalog:
    """A catalog with realistic spreads, the same one ``bench/decision`` times selection over.

    Tasks are named ``task0`` ... ``task{tasks-1}``; architecture ``arch{a}`` (accuracy 0.5-0.99)
    belongs to task ``a mod tasks``; its variants are ``arch{a}.v0`` (the fp32 parent, one thread)
    to ``arch{a}.v{variants-1}`` (fp32, INT8 static or dynamic, 1 or 2 threads, max batch 1-16,
    up to 3 points less accurate). Each variant's batch time is a line (0.05-5 ms a row, 0.1-3 ms
    fixed) measured at the powers of two up to its max batch, with a p99 1.1-1.6x its p50; load
    time 20-800 ms; memory 10-500 MB; cost from its throughput at ``price_core_hour`` per thread.
    ``scale`` multiplies every batch time (heavier models: scale=1000 gives 0.05-5 s a row) and the
    load times by up to 30 (a heavy model loads in seconds, not minutes).
    """
    rng = rng or random.Random(int(seed))
    archs, variants, tasks = int(archs), int(variants), int(tasks)
    variants_out: dict[str, Variant] = {}
    profiles: dict[str, Profile] = {}
    task_of: dict[str, str] = {}
    accuracy: dict[str, float | None] = {}
    for a in range(archs):
        arch = f"arch{a}"
        task_of[arch] = f"task{a % tasks}"
        base = accuracy[arch] = rng.uniform(0.5, 0.99)
        for i in range(variants):
            parent = i == 0
            v = Variant(
                name=f"{arch}.v{i}",
                architecture=arch,
                artifact_hash="synthetic",
                format="onnx-fp32" if parent else rng.choice(["onnx-fp32", "onnx-int8-static", "onnx-int8-dynamic"]),
                status="ready",
                accuracy=base if parent else max(0.0, base - rng.uniform(0, 0.03)),
                accuracy_source="measured",
                max_batch=rng.choice([1, 4, 8, 16]),
                threads=1 if parent else rng.choice([1, 2]),
                created_at=0.0,
            )
            slope, intercept = rng.uniform(0.05, 5.0) * scale, rng.uniform(0.1, 3) * scale
            sizes = [b for b in (1, 2, 4, 8, 16) if b <= v.max_batch]
            p50 = {b: intercept + slope * b for b in sizes}
            p99 = {b: ms * rng.uniform(1.1, 1.6) for b, ms in p50.items()}
            best = max(sizes, key=lambda b: b / p50[b])
            throughput = best / p50[best] * 1000
            variants_out[v.name] = v
            profiles[v.name] = Profile(
                variant=v.name,
                hardware="synthetic",
                latency_p50_ms=p50,
                latency_p99_ms=p99,
                fit_slope_ms=slope,
                fit_intercept_ms=intercept,
                throughput=throughput,
                best_batch=best,
                cost_per_1k=price_core_hour * v.threads / 3600 / throughput * 1000,
                load_time_ms=rng.uniform(20, 800) * min(scale, 30.0),
                peak_memory_mb=rng.uniform(10, 500),
                accuracy=v.accuracy,
                accuracy_source="measured",
                measured_at=0.0,
            )
    return SimCatalog(variants_out, profiles, task_of, accuracy, hardware="synthetic")


CSV_COLUMNS = (
    "task",
    "architecture",
    "variant",
    "hardware",
    "batch",
    "p50_ms",
    "p99_ms",
    "accuracy",
    "memory_mb",
    "load_ms",
)
CSV_OPTIONAL = {"threads": "1", "format": "onnx-fp32"}


def from_csv(path: str | Path, price_of: Callable[[str], float]) -> SimCatalog:
    """Profiles measured anywhere, one row per (variant, hardware kind, batch size): the columns of
    :data:`CSV_COLUMNS` (``accuracy`` may be empty: unknown), optionally ``threads`` (1) and
    ``format`` (``onnx-fp32``). A variant measured on several kinds becomes one simulated variant
    per kind, named ``variant@kind``; its cost per 1000 comes from ``price_of(kind)`` per thread-hour
    and its throughput at its best batch."""
    import csv

    rows: dict[tuple[str, str], dict] = {}  # (variant, kind) -> what its rows say
    arch_task: dict[str, str] = {}
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (needs {','.join(CSV_COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            row, batch, threads, p50, p99, memory, load, acc = _csv_row(where, row)
            if arch_task.setdefault(row["architecture"], row["task"]) != row["task"]:
                raise ValueError(
                    f"{where}: architecture {row['architecture']} is already of task {arch_task[row['architecture']]}"
                )
            key = (row["variant"], row["hardware"])
            first = {"arch": row["architecture"], "acc": acc, "threads": threads, "format": row["format"]}
            seen = rows.setdefault(key, {**first, "memory": memory, "load": load, "p50": {}, "p99": {}})
            if (seen["arch"], seen["acc"], seen["threads"]) != (row["architecture"], acc, threads):
                raise ValueError(
                    f"{where}: {row['variant']} on {row['hardware']} has another architecture, accuracy or threads than on its earlier rows"
                )
            if batch in seen["p50"]:
                raise ValueError(f"{where}: batch {batch} of {row['variant']} on {row['hardware']} is listed twice")
            seen["p50"][batch], seen["p99"][batch] = p50, p99
            seen["memory"], seen["load"] = max(seen["memory"], memory), max(seen["load"], load)
    if not rows:
        raise ValueError(f"{path}: no rows")
    kinds_seen = sorted({k for _, k in rows})
    variants, profiles, kinds, accuracy = {}, {}, {}, {}  # accuracy: the architecture's, or None
    for (name, kind), r in sorted(rows.items()):
        full = f"{name}@{kind}" if len(kinds_seen) > 1 else name
        sizes = sorted(r["p50"])
        best = max(sizes, key=lambda b: b / r["p50"][b])
        throughput = best / r["p50"][best] * 1000
        slope, intercept = linear_fit(sizes, [r["p50"][b] for b in sizes])
        v = Variant(
            name=full,
            architecture=r["arch"],
            artifact_hash="catalog",
            format=r["format"],
            provider="cuda" if is_gpu(kind) else "cpu",
            status="ready",
            accuracy=r["acc"],
            accuracy_source="declared" if r["acc"] is not None else "unknown",
            max_batch=sizes[-1],
            threads=r["threads"],
            created_at=0.0,
        )
        variants[full], kinds[full] = v, kind
        profiles[full] = Profile(
            variant=full,
            hardware=kind,
            latency_p50_ms=dict(r["p50"]),
            latency_p99_ms=dict(r["p99"]),
            fit_slope_ms=slope,
            fit_intercept_ms=intercept,
            throughput=throughput,
            best_batch=best,
            cost_per_1k=price_of(kind) * r["threads"] / 3600 / throughput * 1000,
            load_time_ms=r["load"],
            peak_memory_mb=r["memory"],
            accuracy=r["acc"],
            accuracy_source=v.accuracy_source,
            measured_at=0.0,
        )
        if r["format"] == "onnx-fp32" and r["acc"] is not None:  # the architecture's accuracy: its fp32's best
            accuracy[r["arch"]] = max(accuracy.get(r["arch"]) or 0.0, r["acc"])
    for arch in arch_task:
        accuracy.setdefault(
            arch, max((v.accuracy or 0.0 for v in variants.values() if v.architecture == arch), default=None)
        )
    return SimCatalog(variants, profiles, arch_task, accuracy, hardware=", ".join(kinds_seen), kinds=kinds)


def _csv_row(where: str, row: dict) -> tuple:
    """One catalog row, stripped, defaulted and checked: (row, batch, threads, p50, p99, memory_mb,
    load_ms, accuracy or None)."""
    row = {k: (v or "").strip() for k, v in row.items() if k is not None}
    for k, default in CSV_OPTIONAL.items():
        row[k] = row.get(k) or default
    for k in ("task", "architecture", "variant", "hardware"):
        if not row[k]:
            raise ValueError(f"{where}: {k} is empty")
    try:
        batch, threads = int(row["batch"]), int(row["threads"])
        p50, p99 = float(row["p50_ms"]), float(row["p99_ms"])
        memory, load = float(row["memory_mb"]), float(row["load_ms"])
        acc = float(row["accuracy"]) if row["accuracy"] else None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (batch and threads whole numbers; times, memory, accuracy numbers)") from None
    if batch < 1 or threads < 1:
        raise ValueError(f"{where}: batch and threads must be at least 1")
    if not 0 < p50 <= p99:
        raise ValueError(f"{where}: p50_ms {p50:g} and p99_ms {p99:g} must satisfy 0 < p50 <= p99")
    if memory < 0 or load < 0 or (acc is not None and not 0 <= acc <= 1):
        raise ValueError(f"{where}: memory_mb and load_ms must be >= 0, accuracy within 0..1")
    return row, batch, threads, p50, p99, memory, load, acc
