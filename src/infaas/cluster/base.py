"""The cluster backend contract: where workers run and how the frontend talks to them.

A worker handle looks the same whether the worker is a local process or a Ray actor; the router,
the placement, the controller and the views use only the names declared here (no probing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from infaas.hardware import HardwareKind
    from infaas.protocol.shm import Shared


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a worker needs to load one variant."""

    variant: str
    path: str
    threads: int
    max_batch: int
    provider: str = "cpu"
    max_delay_s: float = 0.0
    instances: int = 1
    latency_slope_ms: float = 0.0  # the profile's fit, for deadline-aware batching
    latency_intercept_ms: float = 0.0
    max_queue_s: float | None = None  # queue bound: work that can finish within the longest allowed wait
    max_queue_bytes: int | None = None  # queue bound in tensor bytes
    admission: bool = True  # refuse at once what cannot finish by its deadline
    sha256: str = ""  # the artifact's content hash, verified by the worker before it loads it
    # the profile's p50 per batch size (ms) on this hardware kind: with one instance the worker takes
    # its batch size from it instead of timing every batch size at load (a cold start stays as fast
    # as the profile's load time says)
    batch_ms: tuple[tuple[int, float], ...] = ()
    # the profile's batch-1 p50 over a dynamic axis (length, ms) and which axis that is: the worker's
    # admission and batching cost a request by its length (Profile.cost_ms)
    axis: str = ""
    axis_ms: tuple[tuple[int, float], ...] = ()
    format: str = "onnx-fp32"  # which runtime runs the artifact, and how (registry.types.runtime_of)
    cache_dir: str = ""  # where a runtime that compiles (OpenVINO) keeps its compiled blobs; "": none
    # the artifact's load options as the generator recorded them (Variant.params: a PyTorch program's
    # output names, memory format, precision); each runtime reads what it needs
    options: tuple[tuple[str, Any], ...] = ()


def spec_msg(spec: LoadSpec) -> dict:
    """A load spec as the ``load`` message's fields (what travels to a worker process or actor)."""
    return {
        "variant": spec.variant,
        "path": spec.path,
        "threads": spec.threads,
        "max_batch": spec.max_batch,
        "provider": spec.provider,
        "max_delay_s": spec.max_delay_s,
        "instances": spec.instances,
        "latency_ms": (spec.latency_slope_ms, spec.latency_intercept_ms),
        "max_queue_s": spec.max_queue_s,
        "max_queue_bytes": spec.max_queue_bytes,
        "admission": spec.admission,
        "sha256": spec.sha256,
        "batch_ms": dict(spec.batch_ms),
        "axis": spec.axis,
        "axis_ms": dict(spec.axis_ms),
        "format": spec.format,
        "cache_dir": spec.cache_dir,
        "options": dict(spec.options),
    }


def spec_from_msg(m: dict) -> LoadSpec:
    """The inverse of :func:`spec_msg` (a Ray actor's placement, read back by a frontend)."""
    slope, intercept = m.get("latency_ms") or (0.0, 0.0)
    return LoadSpec(
        variant=m["variant"],
        path=m.get("path", ""),
        threads=m["threads"],
        max_batch=m["max_batch"],
        provider=m.get("provider", "cpu"),
        max_delay_s=m.get("max_delay_s", 0.0),
        instances=m.get("instances", 1),
        latency_slope_ms=slope,
        latency_intercept_ms=intercept,
        max_queue_s=m.get("max_queue_s"),
        max_queue_bytes=m.get("max_queue_bytes"),
        admission=m.get("admission", True),
        sha256=m.get("sha256", ""),
        batch_ms=tuple(sorted((int(b), float(ms)) for b, ms in (m.get("batch_ms") or {}).items())),
        axis=m.get("axis", ""),
        axis_ms=tuple(sorted((int(n), float(ms)) for n, ms in (m.get("axis_ms") or {}).items())),
        format=m.get("format", "onnx-fp32"),
        cache_dir=m.get("cache_dir", ""),
        options=tuple(sorted((m.get("options") or {}).items())),
    )


class WorkerState(enum.Enum):
    """A worker's life; every transition happens in the handle's one ``_set_state``, logged."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"  # its process died; a new one is starting and reloading its variants
    STOPPING = "stopping"
    STOPPED = "stopped"


class ReplicaState(enum.Enum):
    """A (worker, variant) replica's life; only READY replicas are routed to."""

    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"  # out of routing; requests already sent finish
    UNLOADING = "unloading"


@dataclass(slots=True)
class WorkerResult:
    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int
    batch_size: int
    batch_pos: int
    # the worker's measured / profiled batch time of that variant lately (batches that ran alone): the one
    # learned correction its admission and the selection both apply; None from a worker that sends none
    scale: float | None = None


class WorkerHandle(Protocol):
    name: str
    cores: tuple[int, ...]
    kind: HardwareKind | None  # the hardware it runs on; None: not known yet (the backend's kind)
    node: str  # where it runs: "local", or a Ray node's address
    pid: int | None  # its current process, once started
    restarts: int  # how many times its process was replaced
    last_exit: str  # why its last process (or actor) ended; "" while none has
    placement_version: int  # changes whenever what the worker has loaded (or its liveness) changes
    state: WorkerState
    replicas: dict[str, ReplicaState]  # the current process's replicas, in any state

    @property
    def alive(self) -> bool: ...
    @property
    def loaded(self) -> dict[str, LoadSpec]: ...
    def hosts(self, variant: str) -> bool: ...
    def forget(self, variant: str) -> None: ...  # the worker said it does not host it: stop routing there
    def assigned(self, variant: str) -> bool: ...  # in its target placement or present in any state
    def empty(self) -> bool: ...  # nothing assigned, nothing in flight
    def missing(self) -> list[LoadSpec]: ...  # in the target placement, no replica (a failed reload)
    def loaded_names(self) -> set[str] | frozenset[str]: ...
    def outstanding(self, variant: str | None = None) -> int: ...
    def rows_in_flight(self, variant: str) -> int: ...
    def running_ms(self, variant: str) -> float | None: ...  # how long its running batch has run
    async def start(self) -> None: ...
    async def stop(self, kill: bool = True) -> None: ...  # kill: end its process (or actor) too
    def kill(self) -> None: ...  # fault drills: the worker dies and is replaced as after any death
    async def load(self, spec: LoadSpec, keep_target: bool = False) -> dict[str, Any]: ...
    async def unload(self, variant: str, drain_s: float = 30.0) -> None: ...
    async def resize(self, variant: str, instances: int) -> dict[str, Any]: ...  # runtime instances of a replica
    async def profile(self, request: dict, timeout: float = 600) -> dict[str, Any]: ...
    async def infer(
        self,
        variant: str,
        inputs: dict[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        drop_late: bool = True,
        offline: bool = False,
        shm: Shared | None = None,
    ) -> WorkerResult: ...
    async def stats(self) -> dict[str, Any]: ...
    def turned_away(self, variant: str, rows: int) -> None: ...  # demand the selection refused (saturated)
    def forget_shm(self, key: str) -> None: ...  # shared-memory object ``key`` unregistered: unmap it


class ClusterBackend(Protocol):
    cores_per_worker: int
    kind: HardwareKind  # the catalog's hardware kind (each worker may report its own)
    initial: int  # workers it starts with

    @property
    def worker_limit(self) -> int: ...  # its own ceiling on workers; 0: this machine's cores decide

    @property
    def workers(self) -> list[WorkerHandle]: ...
    def can_add(self) -> str | None: ...
    async def add_worker(self) -> WorkerHandle: ...
    def measuring_worker(self, name: str) -> WorkerHandle: ...  # a fresh, unpooled worker for one measurement
    async def remove_worker(self, name: str, only_if_empty: bool = False) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
