"""What the simulator serves: variants with their profiles, grouped by architecture and task.

Built from a real data directory with the server's own :class:`~infaas.catalog.Catalog` (the same
status, accuracy and profile per variant the router would see on this machine's hardware kind).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from infaas.policy import Option, ScopeIndex
from infaas.registry import Profile, Variant


@dataclass
class SimCatalog:
    variants: dict[str, Variant]
    profiles: dict[str, Profile]
    tasks: dict[str, str]  # architecture -> task
    accuracy: dict[str, float | None] = field(default_factory=dict)  # architecture -> its accuracy
    hardware: str = ""  # the kind the profiles were measured on

    def __post_init__(self) -> None:
        self.by_arch: dict[str, list[Variant]] = {a: [] for a in self.tasks}
        for v in sorted(self.variants.values(), key=lambda v: v.name):
            self.by_arch.setdefault(v.architecture, []).append(v)
        self._index: dict[tuple[str, int], ScopeIndex] = {}

    @property
    def task_names(self) -> list[str]:
        return sorted(set(self.tasks.values()))

    def of_task(self, task: str) -> list[Variant]:
        return [v for a, t in sorted(self.tasks.items()) if t == task for v in self.by_arch.get(a, [])]

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


SYNTHETIC_FIELDS = {"archs": 100, "variants": 20, "tasks": 10, "seed": 0}


def parse_synthetic(spec: str) -> dict[str, int]:
    """``archs=100,variants=20,tasks=10,seed=0`` (any subset; the rest default), with clear errors."""
    out = dict(SYNTHETIC_FIELDS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or key.strip() not in SYNTHETIC_FIELDS:
            raise ValueError(f"--synthetic: {part!r} is not key=value with key in {', '.join(SYNTHETIC_FIELDS)}")
        try:
            out[key.strip()] = int(raw)
        except ValueError:
            raise ValueError(f"--synthetic: {key.strip()} must be a whole number, got {raw!r}") from None
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
    """
    rng = rng or random.Random(seed)
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
            slope, intercept = rng.uniform(0.05, 5.0), rng.uniform(0.1, 3)
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
                load_time_ms=rng.uniform(20, 800),
                peak_memory_mb=rng.uniform(10, 500),
                accuracy=v.accuracy,
                accuracy_source="measured",
                measured_at=0.0,
            )
    return SimCatalog(variants_out, profiles, task_of, accuracy, hardware="synthetic")
