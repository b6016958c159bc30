"""Simulated workers: cores, a memory budget, a price, and the variants they host, each a
:class:`~infaas.sim.engine.SimReplica` that is loading (until its profile's load time has passed),
ready, or draining (taking nothing new, finishing what it has).

Variants on one worker share its cores: a batch that starts while others run gets
``cores / max(cores, threads busy)`` of a core each (processor sharing, judged at the batch's start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infaas.registry import Profile, Variant
from infaas.sim.engine import Outcome, SimReplica

_FIELDS = {
    "workers": "workers at the start",
    "min": "the fewest workers the controller keeps (default: workers)",
    "cores": "cores per worker",
    "max": "the most workers the controller may run",
    "memory_mb": "memory budget per worker (MB)",
    "price": "USD per core-hour (a GPU kind: per GPU-hour, with cores=1)",
}


def is_gpu(kind: str) -> bool:
    return any(word in kind.lower() for word in ("gpu", "cuda"))


@dataclass(frozen=True)
class Pool:
    """Workers of one hardware kind (``""``: any variant runs on them), with their bounds and price."""

    kind: str = ""
    workers: int = 2
    cores: int = 1
    max_workers: int = 0  # 0: four times ``workers``
    min_workers: int = 0  # 0: ``workers``
    memory_mb: float = 4096.0
    price_core_hour: float = 0.0425

    @property
    def fewest(self) -> int:
        return self.min_workers or self.workers

    @property
    def most(self) -> int:
        return max(self.workers, self.max_workers or 4 * self.workers)

    def runs(self, kind: str) -> bool:
        """Whether a variant profiled on ``kind`` runs on this pool's workers (``""`` on either side:
        any)."""
        return not self.kind or not kind or self.kind == kind

    def describe(self) -> str:
        return (
            f"{self.kind + ': ' if self.kind else ''}{self.workers} worker(s) of {self.cores} core(s) "
            f"({self.fewest} to {self.most}), {self.memory_mb:g} MB each, ${self.price_core_hour:g}/core-hour"
        )


@dataclass(frozen=True)
class Fleet:
    """One pool (``workers=4,cores=1[,min=1][,max=64][,memory_mb=4096][,price=0.0425]``) or pools of
    hardware kinds (``cpu:workers=4,cores=1;gpu:workers=1,price=2.5``)."""

    pools: tuple[Pool, ...] = (Pool(),)

    def __post_init__(self) -> None:
        kinds = [p.kind for p in self.pools]
        if not self.pools or len(set(kinds)) != len(kinds) or ("" in kinds and len(kinds) > 1):
            raise ValueError("--fleet: one pool, or pools of distinct hardware kinds (kind:fields;kind:fields)")

    @property
    def cores(self) -> int:
        return max(p.cores for p in self.pools)

    def pool_for(self, kind: str) -> Pool | None:
        """The pool a variant profiled on ``kind`` runs in (None: none does)."""
        return next((p for p in self.pools if p.runs(kind)), None)

    def price_for(self, kind: str) -> float:
        pool = self.pool_for(kind)
        return pool.price_core_hour if pool is not None else 0.0

    @classmethod
    def parse(cls, spec: str, price_core_hour: float = 0.0425, price_gpu_hour: float = 0.526) -> Fleet:
        """A fleet from its spec; a clear error naming the field that is wrong."""
        pools = []
        for text in filter(None, (t.strip() for t in spec.split(";"))):
            kind, sep, fields = text.partition(":")
            if not sep:
                kind, fields = "", text
            kind = kind.strip()
            default = price_gpu_hour if is_gpu(kind) else price_core_hour
            pools.append(_pool(kind, fields, default))
        return cls(tuple(pools) or (Pool(price_core_hour=price_core_hour),))

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.pools)


def _pool(kind: str, spec: str, price: float) -> Pool:
    where = f"--fleet {kind}: " if kind else "--fleet: "
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in _FIELDS:
            known = ", ".join(f"{k} ({v})" for k, v in _FIELDS.items())
            raise ValueError(f"{where}{part!r} is not one of key=value with key in: {known}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ValueError(f"{where}{key} must be a number, got {raw!r}") from None
    for key in ("workers", "cores", "max", "min"):
        if key in values and (values[key] != int(values[key]) or values[key] < (1 if key != "max" else 0)):
            raise ValueError(f"{where}{key} must be a whole number of at least 1, got {values[key]:g}")
    for key in ("memory_mb", "price"):
        if key in values and values[key] <= 0:
            raise ValueError(f"{where}{key} must be positive, got {values[key]:g}")
    workers = int(values.get("workers", 2))
    if values.get("min", 0) > workers:
        raise ValueError(f"{where}min ({values['min']:g}) is more than the workers it starts with ({workers})")
    if 0 < values.get("max", 0) < workers:
        raise ValueError(f"{where}max ({values['max']:g}) is fewer than the workers it starts with ({workers})")
    return Pool(
        kind=kind,
        workers=workers,
        cores=int(values.get("cores", 1)),
        max_workers=int(values.get("max", 0)),
        min_workers=int(values.get("min", 0)),
        memory_mb=values.get("memory_mb", 4096.0),
        price_core_hour=values.get("price", price),
    )


@dataclass
class Hosted:
    variant: Variant
    profile: Profile
    replica: SimReplica
    state: str  # loading | ready | draining
    ready_at: float
    held: list[Outcome] = field(default_factory=list)  # arrived while it loaded
    replaces: str | None = None  # a variant to unload from this worker once this one is ready
    instances: int = 1  # runtime instances held (memory, cores), loading ones included


class SimWorker:
    def __init__(self, name: str, pool: Pool, started: float) -> None:
        self.name, self.pool, self.started = name, pool, started
        self.cores, self.memory_mb = pool.cores, pool.memory_mb
        self.removed: float | None = None
        self.hosted: dict[str, Hosted] = {}
        self.retired_cpu_s = 0.0  # CPU time of replicas since unloaded

    # what a frontend sees of a worker (the names the placement code reads)
    @property
    def loaded(self) -> dict[str, Hosted]:
        return {n: h for n, h in self.hosted.items() if h.state == "ready"}

    def hosts(self, name: str) -> bool:
        h = self.hosted.get(name)
        return h is not None and h.state == "ready"

    def outstanding(self, name: str | None = None) -> int:
        hosted = self.hosted.values() if name is None else [h for n, h in self.hosted.items() if n == name]
        return sum(h.replica.in_flight_rows + len(h.held) for h in hosted)

    def in_flight(self) -> dict[str, int]:
        """Rows queued or running per hosted variant, those with none left out (a slot counts only
        the work in flight: a worker hosting fifty idle variants costs nothing to read)."""
        out = {}
        for n, h in self.hosted.items():
            if h.state != "loading" and (rows := h.replica.in_flight_rows):
                out[n] = rows
        return out

    def threads_held(self) -> int:
        """Threads its runtime instances hold (what a worker's room counts, busy or not)."""
        return sum(min(h.variant.threads, self.cores) * h.instances for h in self.hosted.values())

    def threads_busy(self) -> int:
        return sum(len(h.replica.running) * h.variant.threads for h in self.hosted.values())

    def speed(self, threads: int) -> float:
        """The share of its threads' speed a batch of ``threads`` gets if it starts now."""
        return self.cores / max(self.cores, self.threads_busy() + threads)

    @property
    def cpu_s(self) -> float:
        live = sum(h.replica.busy_s * min(h.variant.threads, self.cores) for h in self.hosted.values())
        return self.retired_cpu_s + live

    def free_mb(self) -> float:
        return self.memory_mb - sum(h.profile.peak_memory_mb * h.instances for h in self.hosted.values())

    def report(self, now: float) -> dict:
        """Counters as a worker process reports them (``stats``): the controller's input."""
        return {
            "time": now,
            "cpu_s": self.cpu_s,
            "cores": self.cores,
            "variants": {n: h.replica.stats() for n, h in self.hosted.items() if h.state != "loading"},
        }

    def empty(self) -> bool:
        return not self.hosted

    def retire(self, name: str) -> None:
        h = self.hosted.pop(name)
        self.retired_cpu_s += h.replica.busy_s * min(h.variant.threads, self.cores)

    def core_seconds(self, end: float) -> float:
        return ((self.removed if self.removed is not None else end) - self.started) * self.cores
