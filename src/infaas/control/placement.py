"""Placement: which variants are loaded on which workers — loads, unloads, cold starts and swaps.

The router asks for a cold start (one load per variant, however many requests wait for it) or a
prefetch; the autoscaler loads and swaps; the repository extension places and unplaces on request.
Every load's answer (the batch size the worker runs) goes to the latency model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

from infaas.catalog import Catalog
from infaas.cluster.base import ClusterBackend, LoadSpec, WorkerHandle
from infaas.decisions import Background, DecisionLog
from infaas.errors import DeadlineExceeded, InvalidInput, NotFound, Unavailable
from infaas.policy.latency import LatencyModel
from infaas.policy.loaded import first_choice, least_busy
from infaas.registry import Registry, Variant
from infaas.settings import Settings


class Placement:
    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        cluster: ClusterBackend,
        settings: Settings,
        latency: LatencyModel,
        decisions: DecisionLog,
        background: Background,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.cluster = cluster
        self.settings = settings
        self.latency = latency
        self.decisions = decisions
        self.background = background
        self._load_lock = asyncio.Lock()
        self._cold: dict[str, asyncio.Task] = {}  # variant -> its load in progress
        self._busy = 0  # loads and registrations in progress (CPU-heavy for seconds: measurements wait)
        self.quiet = asyncio.Event()  # set while none is in progress: the profiler measures then
        self.quiet.set()

    def log_decision(self, kind: str, reason: str, **fields) -> dict:
        return self.decisions.log_decision(kind, reason, **fields)

    @contextlib.asynccontextmanager
    async def busy_section(self):
        """A load (it calibrates at full speed) or a registration (hashing and reading its data): the
        profiler does not start a measurement until none is in progress."""
        self._busy += 1
        self.quiet.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self.quiet.set()

    # ---- choosing what to load -------------------------------------------------------------
    def default_variant(self, arch: str) -> Variant | None:
        """What to load for an architecture until the policy decides."""
        return self.first_choice(self.catalog.by_arch.get(arch, []))

    def first_choice(self, variants: list[Variant], statuses: tuple[str, ...] = ("ready",)) -> Variant | None:
        """The ready variant with the largest max batch, then the most accurate, then the highest
        measured throughput (:func:`~infaas.policy.loaded.first_choice`)."""
        return first_choice(variants, self.catalog.profiles, self.cluster.cores_per_worker, statuses)

    # ---- loads -----------------------------------------------------------------------------
    async def load(self, variant: Variant, worker: WorkerHandle) -> dict:
        spec = LoadSpec(
            variant=variant.name,
            path=str(self.registry.models.path(variant.artifact_hash)),
            threads=variant.threads,
            max_batch=variant.max_batch,
            provider=variant.provider,
            max_delay_s=self.settings.max_queue_delay_us / 1e6,
            instances=self.settings.instances_per_variant,
            max_queue_s=self.settings.request_timeout_s,
            max_queue_bytes=self.settings.max_queue_bytes,
            admission=self.settings.admission_control,
            sha256=variant.artifact_hash.split(".", 1)[0],
            format=variant.format,
            cache_dir=str(self.registry.models.root.parent / "cache" / "openvino"),
            options=tuple(sorted(variant.params.items())),
        )
        if (prof := self.catalog.profiles.get(variant.name)) is not None:
            spec = dataclasses.replace(
                spec,
                latency_slope_ms=prof.fit_slope_ms,
                latency_intercept_ms=prof.fit_intercept_ms,
                batch_ms=tuple(sorted(prof.latency_p50_ms.items())),
                axis=prof.axis,
                axis_ms=tuple(sorted(prof.axis_latency_ms.items())),
            )
        async with self.busy_section():
            result = await worker.load(spec)
        timings = result.get("batch_ms") or {}
        if result.get("preferred_batch"):
            self.latency.loaded(
                worker.name, variant.name, int(result["preferred_batch"]), int(result.get("instances", 1))
            )
        why = f"loaded {variant.name} on worker {worker.name} in {result.get('load_time_s', 0) * 1000:.0f} ms"
        if timings:
            pb = result["preferred_batch"]
            per_row = ", ".join(f"b{b} {t / b:.2f}" for b, t in sorted(timings.items()))
            why += (
                f" ({result['instances']} x {result['threads']} threads); batches of up to {pb}: "
                f"fastest per row {result.get('timed', 'measured at load')} (ms/row: {per_row})"
            )
        self.log_decision(
            "load", why, variant=variant.name, worker=worker.name, preferred_batch=result.get("preferred_batch")
        )
        return result

    async def resize(self, variant: Variant, worker: WorkerHandle, instances: int) -> dict:
        """Run ``instances`` runtime instances of ``variant`` on ``worker``; the latency model learns it."""
        async with self.busy_section():
            result = await worker.resize(variant.name, instances)
        self.latency.resized(worker.name, variant.name, int(result["instances"]))
        return result

    async def ensure_loaded(self, arch: str) -> None:
        """Load the architecture's default variant on the least-busy live worker, if not loaded."""
        variant = self.default_variant(arch)
        if variant is None:
            return
        async with self._load_lock:
            if any(w.hosts(variant.name) for w in self.cluster.workers):
                return
            live = [w for w in self.cluster.workers if w.alive]
            if not live:
                raise Unavailable("no live worker to load on")
            worker = min(live, key=lambda w: len(w.loaded))
            await self.load(variant, worker)

    def loading(self, variant: str) -> bool:
        """Whether a cold start of ``variant`` is in progress."""
        return variant in self._cold

    async def load_cold(self, variant: Variant) -> WorkerHandle:
        """Load a variant that no worker has (one load per variant, however many requests wait for it)."""
        task = self._cold.get(variant.name)
        if task is None:

            async def run() -> WorkerHandle:
                live = [w for w in self.cluster.workers if w.alive]
                if not live:
                    raise Unavailable("no live worker to load on")
                worker = least_busy(live)
                await self.load(variant, worker)
                return worker

            task = self._cold[variant.name] = asyncio.create_task(run())
            task.add_done_callback(lambda _t, name=variant.name: self._cold.pop(name, None))
        return await asyncio.shield(task)

    async def cold_start(self, variant: Variant, deadline: float, deadline_source: str) -> WorkerHandle:
        """A cold start inside a request, bounded by its deadline (the load itself goes on)."""
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await self.load_cold(variant)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request's deadline ({deadline_source}) passed while {variant.name} "
                "was loading for it; the load goes on for the next requests"
            ) from None

    def prefetch(self, variant: Variant) -> None:
        """Load ``variant`` in the background for the next requests (once)."""
        if not self.loading(variant.name):
            self.background.spawn(self.load_cold(variant))

    # ---- swaps and the repository extension ------------------------------------------------
    async def swap(self, old: Variant, new: Variant, kind: str, reason: str) -> None:
        """On every worker hosting ``old``: load ``new`` (it serves before the old one goes), then
        unload ``old`` (draining what was already sent to it). Logged once, with its reason."""
        self.log_decision(kind, reason, variant=old.name, target=new.name)
        for worker in [w for w in self.cluster.workers if w.hosts(old.name)]:
            if not worker.hosts(new.name):
                await self.load(new, worker)
            await worker.unload(old.name)

    async def place(self, name: str, replicas: int = 1) -> list[str]:
        """The repository extension's load: a variant (or an architecture's default variant) on
        ``replicas`` live workers, adding to those that host it already (least-loaded first).
        Returns the workers that host it. With the controller on, it may scale this later."""
        variant = self.catalog.variants.get(name)
        if variant is None and name in self.catalog.architectures:
            variant = self.default_variant(name)
        if variant is None:
            raise NotFound(f"unknown variant or architecture '{name}'")
        if variant.status != "ready":
            raise InvalidInput(f"{variant.name} is {variant.status}: {variant.reason or 'not ready to serve'}")
        if replicas < 1:
            raise InvalidInput("replicas must be at least 1")
        live = [w for w in self.cluster.workers if w.alive]
        hosting = [w for w in live if w.hosts(variant.name)]
        if replicas > len(live):
            raise InvalidInput(f"{replicas} replica(s) of {variant.name} asked; {len(live)} live worker(s)")
        spare = sorted((w for w in live if not w.hosts(variant.name)), key=lambda w: (len(w.loaded), w.outstanding()))
        for worker in spare[: max(0, replicas - len(hosting))]:
            await self.load(variant, worker)
            hosting.append(worker)
        return [w.name for w in hosting]

    async def unplace(self, name: str) -> list[str]:
        """The repository extension's unload: a variant off every worker (what was sent to it drains)."""
        if name not in self.catalog.variants:
            raise NotFound(f"unknown variant '{name}'")
        hosts = [w for w in self.cluster.workers if w.hosts(name)]
        for worker in hosts:
            await worker.unload(name)
        if hosts:
            self.log_decision(
                "unload", f"{name} unloaded from {', '.join(w.name for w in hosts)} on request", variant=name
            )
        return [w.name for w in hosts]

    async def unplace_architecture(self, arch: str) -> None:
        """Every variant of ``arch`` off every worker, restarting ones included (they must not reload it)."""
        for v in self.catalog.by_arch.get(arch, []):
            for w in self.cluster.workers:
                if w.assigned(v.name):
                    await w.unload(v.name)
