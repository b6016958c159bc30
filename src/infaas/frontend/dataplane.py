"""The protocol-agnostic data plane: everything REST and gRPC do goes through here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from infaas.cluster.base import ClusterBackend, LoadSpec, WorkerHandle, WorkerResult
from infaas.errors import (
    DeadlineExceeded,
    InfaasError,
    InvalidInput,
    NotFound,
    Overloaded,
    Unavailable,
)
from infaas.frontend.catalog import Catalog
from infaas.frontend.metrics import Metrics
from infaas.frontend.views import MetadataViews
from infaas.policy import (
    BatchTooLarge,
    Candidate,
    NoCandidate,
    Objective,
    Saturated,
    Slot,
    Unreachable,
    drain_ms,
    select_loaded,
    select_sorted,
)
from infaas.policy.original import NAME as ORIGINAL
from infaas.policy.original import select_original
from infaas.protocol.params import RequestParams, parse_request_params
from infaas.protocol.types import InferOutput, InferRequest, InferResponse, costly, materialize
from infaas.protocol.validate import check_inputs
from infaas.registry import Architecture, Registry, Signature, Variant
from infaas.settings import Settings

log = logging.getLogger("infaas.dataplane")

@dataclasses.dataclass(slots=True)
class Plan:
    """What a request asks for, resolved: scope, signature, variants, rows, parameters, deadline."""

    scope: str
    signature: Signature
    variants: list[Variant]
    rows: int
    params: RequestParams
    objective: Objective
    deadline: float  # time.monotonic()
    deadline_source: str


@dataclasses.dataclass(slots=True)
class Route:
    """Where a request runs, and why."""

    variant: Variant
    worker: WorkerHandle
    reason: str
    predicted_ms: float | None = None
    cost_per_1k: float | None = None
    learn: bool = False  # the prediction came from this worker's slot (queue, batching, correction)


def _ewma(values: dict, key: Any, x: float, alpha: float, start: float | None = None) -> None:
    """Move ``values[key]`` toward ``x`` by ``alpha`` (the first sample sets it, unless ``start``)."""
    before = values.get(key, start)
    values[key] = x if before is None else before + alpha * (x - before)


def _track_median(values: dict, key: Any, x: float) -> None:
    """Move ``values[key]`` toward the running median of ``x``: a step of 2 % of its size (plus
    2 us) up or down (the first sample sets it)."""
    before = values.get(key)
    if before is None:
        values[key] = x
    elif x != before:
        step = 0.02 * (abs(before) + 0.1)
        values[key] = before + (step if x > before else -step)


class DataPlane(MetadataViews):
    def __init__(self, registry: Registry, cluster: ClusterBackend, settings: Settings) -> None:
        self.registry = registry
        self.cluster = cluster
        self.settings = settings
        self.catalog = Catalog(registry, getattr(cluster, "kind", None))
        self.metrics = Metrics(self._queue_depths, self._worker_states)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=settings.decision_log_size)
        self.ready = False
        self._load_lock = asyncio.Lock()
        self._busy = 0  # loads and registrations in progress (CPU-heavy for seconds: measurements wait)
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._profile_lock = asyncio.Lock()  # one profiling at a time: they would disturb each other
        # (worker, variant) -> (batch size the worker runs, runtime instances), from each load's answer:
        # latency predictions model the worker's own batching
        self.batching: dict[tuple[str, str], tuple[int, int]] = {}
        # (worker, variant): running median of what the prediction misses (total - predicted without
        # it), seeded by the serving path's own overhead (total - queue - compute) of a first answer
        self.overhead_ms: dict[tuple[str, str], float] = {}
        self.slowdown: dict[tuple[str, str], float] = {}  # (worker, variant): EWMA of compute / profiled
        self.profiling: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._cold: dict[str, asyncio.Task] = {}  # variant -> its load in progress
        self._loaded_options: dict[tuple[str, str | None], tuple] = {}
        self._pruned_at: tuple = ()  # the placement (workers' versions) last pruned for
        self.worker_report: Callable[[], dict[str, dict[str, Any]]] = dict  # set by the composition root
        self.flagged: Callable[[], Collection[str]] = frozenset  # variants the controller flags overloaded (ditto)

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.cluster.start()
        for arch in list(self.catalog.architectures):
            try:
                await self.ensure_loaded(arch)
            except InfaasError as exc:  # one bad model does not keep the server from serving the others
                log.error("cannot load %s at start: %s", arch, exc.message)
                self.log_decision("error", f"cannot load {arch} at start: {exc.message}", architecture=arch)
        self.ready = True
        self.profile_new_kind()
        self._background(self._follow_store())

    async def _follow_store(self, period_s: float = 0.5) -> None:
        """Refresh the catalog when anyone writes the store: another frontend (a shared Redis store) or
        another process on the SQLite file (``infaas register --data-dir``)."""
        seen = self.registry.store.generation()
        while True:
            await asyncio.sleep(period_s)
            try:
                now = await asyncio.to_thread(self.registry.store.generation)
            except Exception as exc:  # the store is unreachable for a moment: serve from the catalog held
                log.warning("store generation unreadable: %s", exc)
                continue
            if now != seen:
                seen = now
                known = set(self.catalog.architectures)
                self.catalog.refresh()  # on the loop: requests never see a half-built catalog
                self._loaded_options.clear()
                for arch in set(self.catalog.architectures) - known:  # registered through another frontend
                    self._background(self.ensure_loaded(arch))

    def profile_new_kind(self) -> None:
        """Architectures profiled only on other hardware kinds get profiled on this one, in the
        background (their other-kind profiles are never used here)."""
        if not self.settings.profile_on_register:
            return
        for arch in self.catalog.unprofiled_here:
            self.log_decision("profile", f"{arch} has no profiles for this machine's hardware kind "
                              f"{self.catalog.kind.id} ({self.catalog.kind.describe()}); profiling it here",
                              architecture=arch)  # fmt: skip
            self.start_profiling(arch)

    async def stop(self) -> None:
        self.ready = False
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cluster.stop()

    # ---- variants and profiling ----------------------------------------------------------
    def start_profiling(self, arch: str, quick: bool = False) -> dict[str, Any]:
        """Generate and profile an architecture's variants in the background; returns its progress record."""
        if arch not in self.catalog.architectures:
            raise NotFound(f"unknown architecture '{arch}'")
        state = self.profiling.get(arch)
        if state is not None and state["finished"] is None:
            return state
        state = {"architecture": arch, "quick": quick, "stage": "queued", "done": 0, "total": 0,
                 "started": time.time(), "finished": None, "seconds": None, "error": None, "summary": None}  # fmt: skip
        self.profiling[arch] = state
        task = asyncio.create_task(self._profile(arch, quick, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return state

    async def _profile(self, arch: str, quick: bool, state: dict[str, Any]) -> None:
        from infaas.profiler import profile_architecture

        def progress(what: str, done: int, total: int) -> None:
            state.update(stage=what, done=done, total=total)

        try:
            async with self._profile_lock:
                report = await profile_architecture(self.registry, arch, self.settings, quick=quick, progress=progress,
                                                    before_measure=self._quiet.wait)  # fmt: skip
            counts = {s: sum(v.status == s for v in report.variants) for s in ("ready", "rejected", "failed")}
            state["summary"] = {**counts, "skipped": {s.format: s.reason for s in report.skipped}}
            self.catalog.refresh()
            self.log_decision("profile", f"profiled {arch} in {report.seconds:.1f} s: {counts['ready']} variants "
                              f"ready, {counts['rejected']} rejected, {counts['failed']} failed "
                              f"(reasons: infaas variants {arch})", architecture=arch)  # fmt: skip
            await self._replace_rejected(arch)
        except asyncio.CancelledError:
            state["error"] = "cancelled (server stopping)"
            raise
        except Exception as exc:  # the server keeps serving
            log.exception("profiling %s failed", arch)
            state["error"] = f"{type(exc).__name__}: {exc}"
            self.log_decision("profile", f"profiling {arch} failed: {exc}", architecture=arch)
        finally:
            state["finished"] = time.time()
            state["seconds"] = round(state["finished"] - state["started"], 2)

    async def _replace_rejected(self, arch: str) -> None:
        """After profiling, a loaded variant that profiling rejected gives way to the default one."""
        best = self.default_variant(arch)
        for v in self.catalog.by_arch.get(arch, []):
            if v.status != "ready" and best is not None and any(w.hosts(v.name) for w in self.cluster.workers):
                await self.swap(v, best, "replace", f"{v.name} was rejected by profiling ({v.reason}); "
                                f"{best.name} serves in its place")  # fmt: skip

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
            self.log_decision("unload", f"{name} unloaded from {', '.join(w.name for w in hosts)} on request",
                              variant=name)  # fmt: skip
        return [w.name for w in hosts]

    def default_variant(self, arch: str) -> Variant | None:
        """What to load for an architecture until the policy decides."""
        return self._first_choice(self.catalog.by_arch.get(arch, []))

    def _first_choice(self, variants: list[Variant], statuses: tuple[str, ...] = ("ready",)) -> Variant | None:
        """The ready variant with the largest max batch, then the most accurate, then the highest
        measured throughput."""
        ready = [v for v in variants if v.status in statuses]
        ready = [v for v in ready if v.threads <= self.cluster.cores_per_worker] or ready  # fits a worker, if any does
        if not ready:
            return None

        def rank(v: Variant):
            prof = self.catalog.profiles.get(v.name)
            return (v.max_batch, -1.0 if v.accuracy is None else v.accuracy, prof.throughput if prof else 0.0)

        return max(ready, key=rank)

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

    @contextlib.asynccontextmanager
    async def busy_section(self):
        """A load (it calibrates at full speed) or a registration (hashing and reading its data): the
        profiler does not start a measurement until none is in progress."""
        self._busy += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._quiet.set()

    async def load(self, variant: Variant, worker: WorkerHandle) -> dict:
        spec = LoadSpec(
            variant=variant.name, path=str(self.registry.models.path(variant.artifact_hash)),
            threads=variant.threads, max_batch=variant.max_batch, provider=variant.provider,
            max_delay_s=self.settings.max_queue_delay_us / 1e6,
            instances=self.settings.instances_per_variant,
            max_queue_s=self.settings.request_timeout_s, max_queue_bytes=self.settings.max_queue_bytes,
            admission=self.settings.admission_control, sha256=variant.artifact_hash.split(".", 1)[0],
        )  # fmt: skip
        if (prof := self.catalog.profiles.get(variant.name)) is not None:
            spec = dataclasses.replace(spec, latency_slope_ms=prof.fit_slope_ms,
                                       latency_intercept_ms=prof.fit_intercept_ms,
                                       batch_ms=tuple(sorted(prof.latency_p50_ms.items())))  # fmt: skip
        async with self.busy_section():
            result = await worker.load(spec)
        timings = result.get("batch_ms") or {}
        if result.get("preferred_batch"):
            self.batching[(worker.name, variant.name)] = (int(result["preferred_batch"]), int(result.get("instances", 1)))
        why = f"loaded {variant.name} on worker {worker.name} in {result.get('load_time_s', 0) * 1000:.0f} ms"
        if timings:
            pb = result["preferred_batch"]
            per_row = ", ".join(f"b{b} {t / b:.2f}" for b, t in sorted(timings.items()))
            why += (f" ({result['instances']} x {result['threads']} threads); batches of up to {pb}: "
                    f"fastest per row {result.get('timed', 'measured at load')} (ms/row: {per_row})")
        self.log_decision("load", why, variant=variant.name, worker=worker.name,
                          preferred_batch=result.get("preferred_batch"))  # fmt: skip
        return result

    def _slot(self, worker: WorkerHandle, name: str) -> Slot:
        """How a loaded variant's next request would run on ``worker``: rows in flight; the batch
        size and instances it runs with there; the correction learned for it there (``overhead_ms``);
        how much slower than profiled its batches ran there alone lately (EWMA of compute /
        profiled, bounded 0.5-10); and the work other variants have in flight on the same cores
        (``_shared``: ``predict_ms`` counts it as processor sharing, not in series)."""
        batch, instances = self.batching.get((worker.name, name), (0, 1))
        return (worker.name, worker.rows_in_flight(name), batch or None, instances,
                self.overhead_ms.get((worker.name, name), 0.0), self.slowdown.get((worker.name, name), 1.0),
                self._shared(worker, name))  # fmt: skip

    def _shared(self, worker: WorkerHandle, name: str) -> tuple[float, ...]:
        """The work (ms) each other variant on ``worker`` has in flight: it time-shares the cores."""
        out = []
        for other in worker.loaded_names():
            if other == name or not (rows := worker.rows_in_flight(other)):
                continue
            prof, var = self.catalog.profiles.get(other), self.catalog.variants.get(other)
            if prof is not None and var is not None:
                batch, instances = self.batching.get((worker.name, other), (0, 1))
                out.append(drain_ms(prof, var.max_batch, rows, batch or None, instances))
        return tuple(out)

    def _background(self, coro) -> None:
        """Run a coroutine beside the request path; failures are logged, never raised into a query."""
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("background work failed: %s", exc)
                self.log_decision("error", f"background work failed: {exc}")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _runnable(self, variants: list[Variant]) -> list[Variant]:
        """The variants a worker runs as profiled: no more threads than a worker has cores (a
        2-thread variant on a 1-core worker runs on one thread, slower than its profile says, and
        the bench/workload decision log showed such variants cold-started for bursts, then
        downgraded, then cold-started again). All of them if none fits (served, not as profiled)."""
        cores = self.cluster.cores_per_worker
        fitting = [v for v in variants if v.threads <= cores]
        return fitting if any(v.status == "ready" for v in fitting) else variants

    def _scope_options(self, name: str, version: str | None, variants: list[Variant]):
        """Cost-sorted options of a scope, and of its loaded variants; the latter cached until a
        worker's placement changes (loads, unloads, restarts), so a query does not rebuild them."""
        index = self.catalog.options(name, version, variants)
        placement = tuple(w.placement_version for w in self.cluster.workers)
        key = (name, version)
        cached = self._loaded_options.get(key)
        if placement != self._pruned_at:
            self._pruned_at = placement
            self._prune()
        if cached is None or cached[0] != placement or cached[1] is not index:
            names = set().union(*(w.loaded_names() for w in self.cluster.workers))
            cached = (placement, index, [o for o in index.ordered if o.variant.name in names])
            self._loaded_options[key] = cached
        return index, cached[2]

    def _prune(self) -> None:
        """Forget what was learned about replicas that left their worker's target placement
        (unloaded, or the worker removed); a restarting worker keeps what it will reload."""
        workers = {w.name: w for w in self.cluster.workers}
        for learned in (self.batching, self.overhead_ms, self.slowdown):
            for key in [k for k in learned if k[0] not in workers or not workers[k[0]].assigned(k[1])]:
                del learned[key]

    async def load_cold(self, variant: Variant) -> WorkerHandle:
        """Load a variant that no worker has (one load per variant, however many requests wait for it)."""
        task = self._cold.get(variant.name)
        if task is None:
            async def run() -> WorkerHandle:
                live = [w for w in self.cluster.workers if w.alive]
                if not live:
                    raise Unavailable("no live worker to load on")
                worker = min(live, key=lambda w: (len(w.loaded), w.outstanding()))
                await self.load(variant, worker)
                return worker

            task = self._cold[variant.name] = asyncio.create_task(run())
            task.add_done_callback(lambda _t, name=variant.name: self._cold.pop(name, None))
        return await asyncio.shield(task)

    async def _cold_start(self, variant: Variant, plan: Plan) -> WorkerHandle:
        """A cold start inside a request, bounded by its deadline (the load itself goes on)."""
        try:
            async with asyncio.timeout(plan.deadline - time.monotonic()):
                return await self.load_cold(variant)
        except TimeoutError:
            raise DeadlineExceeded(f"the request's deadline ({plan.deadline_source}) passed while {variant.name} "
                                   "was loading for it; the load goes on for the next requests") from None  # fmt: skip

    def log_decision(self, kind: str, reason: str, **fields: Any) -> dict:
        entry = {"time": time.time(), "kind": kind, "reason": reason, **fields}
        self.decisions.append(entry)
        return entry

    # ---- inference ---------------------------------------------------------------------------
    async def infer(self, req: InferRequest, offline: bool = False) -> InferResponse:
        """Serve one request in four steps: resolve (what is asked, by when), route (which variant
        on which worker), execute (on the worker, within the deadline), respond. ``offline``: a
        batch job's request (low priority, the longest deadline, not logged per batch)."""
        start = time.perf_counter_ns()
        route: Route | None = None
        try:
            plan = self._resolve(req, offline)
            if costly(req.inputs):
                await asyncio.to_thread(materialize, req.inputs)
            else:
                materialize(req.inputs)
            route = await self._route(req, plan, offline)
            result = await self._execute(req, plan, route, offline)
        except InfaasError as exc:
            model = req.model if req.model in self.catalog.known_names else "(unknown)"  # bounded labels
            self.metrics.failure(model, route.variant.name if route else "", exc.status,
                                 time.perf_counter_ns() - start)  # fmt: skip
            raise
        return self._respond(req, plan, route, result, start)

    def _resolve(self, req: InferRequest, offline: bool) -> Plan:
        """The scope, its signature and variants, the batch size and the deadline. Everything is
        checked against the signature here, before any tensor is decoded."""
        scope, sig, variants, _ = self.catalog.resolve(req.model, req.version)
        params = parse_request_params(req.parameters)
        rows = check_inputs(req, sig)
        if req.outputs is not None:
            known = {s.name for s in sig.outputs}
            if unknown := [o.name for o in req.outputs if o.name not in known]:
                raise InvalidInput(f"unknown output(s) {unknown}; '{req.model}' has {sorted(known)}")
        now = time.monotonic()
        budget, why = self.settings.default_timeout_s, "the server's default_timeout_s"
        if offline:
            budget, why = self.settings.request_timeout_s, "an offline job's request_timeout_s"
        if params.latency_ms is not None:
            budget, why = params.latency_ms / 1000, "its latency_ms"
        if params.timeout_us is not None and params.timeout_us / 1e6 < budget:
            budget, why = params.timeout_us / 1e6, "its timeout"
        if budget > self.settings.request_timeout_s:
            budget, why = self.settings.request_timeout_s, "the server's request_timeout_s"
        deadline = now + budget
        if req.deadline is not None and req.deadline < deadline:
            deadline, why = req.deadline, "the caller's deadline"
        if deadline <= now:
            raise DeadlineExceeded(f"the request's deadline ({why}) had passed when it arrived")
        objective = Objective(params.latency_ms, params.min_accuracy, params.max_cost, params.allow_estimated)
        return Plan(scope, sig, variants, rows, params, objective, deadline, why)

    async def _route(self, req: InferRequest, plan: Plan, offline: bool) -> Route:
        """Which variant serves, on which worker, and why (policy.select; a cold start if needed)."""
        scope, variants, rows, objective = plan.scope, plan.variants, plan.rows, plan.objective
        workers = self.cluster.workers
        predicted = cost = None
        learn = False
        if objective.empty or scope.startswith("variant"):
            members = self.catalog.scope_names(req.model, req.version, variants)
            hosts: dict[str, list[tuple[str, int]]] = {}
            for w in workers:  # only what is loaded: a scope may have hundreds of variants
                for name in w.loaded_names():
                    if name in members:
                        hosts.setdefault(name, []).append((w.name, w.outstanding(name)))
            candidates = [Candidate(self.catalog.variants[n], tuple(h)) for n, h in hosts.items()
                      if n in self.catalog.variants]  # a variant removed meanwhile is not a candidate
            try:
                decision = select_loaded(candidates, rows, scope)
                chosen, worker_name, reason = decision.variant, decision.worker, decision.reason
            except BatchTooLarge as exc:
                raise InvalidInput(str(exc)) from None
            except NoCandidate as exc:
                # nothing loaded (unloaded when idle, or never loaded): a cold start
                explicit = ("ready", "rejected") if scope.startswith("variant") else ("ready",)
                chosen = self._first_choice([v for v in variants if v.max_batch >= rows], explicit)
                if chosen is None:
                    raise Unavailable(str(exc)) from None
                worker_name = (await self._cold_start(chosen, plan)).name
                reason = f"{exc}: cold start of {chosen.name}"
        else:
            ordered, loaded = self._scope_options(req.model, req.version, self._runnable(variants))

            def live(name: str) -> tuple[Slot, ...]:
                return tuple(self._slot(w, name) for w in workers if w.hosts(name))

            try:
                if self.settings.policy == ORIGINAL:
                    choice = select_original(objective, loaded, ordered, rows, scope, live, self.flagged())
                else:
                    choice = select_sorted(objective, loaded, ordered, rows, scope, live)
            except Saturated as exc:
                raise Overloaded(str(exc), retry_after_s=max(0.0, exc.wait_ms / 1000)) from None
            except Unreachable as exc:
                raise InvalidInput(str(exc)) from None
            chosen, worker_name, reason = choice.variant, choice.worker, choice.reason
            predicted, cost = choice.predicted_ms, choice.cost_per_1k
            learn = worker_name is not None and self.settings.policy != ORIGINAL
            if worker_name is None:
                worker_name = (await self._cold_start(chosen, plan)).name
            elif choice.prefetch is not None and choice.prefetch.name not in self._cold:
                self._background(self.load_cold(choice.prefetch))
            if not offline:
                self.log_decision("select", reason, variant=chosen.name, worker=worker_name,
                                  predicted_ms=predicted)  # fmt: skip
        # the worker is looked up now: the placement may have changed while a cold start ran
        worker = next((w for w in self.cluster.workers if w.name == worker_name and w.hosts(chosen.name)), None)
        if worker is None:
            raise Unavailable(f"{chosen.name} left worker {worker_name} while this request was routed "
                              "(unloaded, restarted or removed); retry")  # fmt: skip
        return Route(chosen, worker, reason, predicted, cost, learn)

    async def _execute(self, req: InferRequest, plan: Plan, route: Route, offline: bool) -> WorkerResult:
        """Run on the worker; the deadline travels with the request, and a caller that gives up
        (deadline passed, disconnect, gRPC cancel) cancels it in the worker."""
        inputs = {i.name: i.data for i in req.inputs}
        drop_late = plan.params.drop_late
        wait = plan.deadline - time.monotonic() + self.settings.deadline_grace_s
        if not drop_late:  # the caller accepts a late answer: wait up to the server's ceiling
            wait = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(wait):
                return await route.worker.infer(route.variant.name, inputs, plan.rows, plan.deadline,
                                                drop_late, offline)  # fmt: skip
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from worker {route.worker.name} by the request's deadline "
                                   f"({plan.deadline_source}); the request was cancelled there") from None  # fmt: skip

    def _respond(self, req: InferRequest, plan: Plan, route: Route, result: WorkerResult, start: int) -> InferResponse:
        total_ns = time.perf_counter_ns() - start
        var, rows = route.variant, plan.rows
        self.metrics.success(req.model, var.name, rows, total_ns, result.queue_ns,
                             result.compute_ns, result.batch_size, result.batch_pos == 0)  # fmt: skip
        key = (route.worker.name, var.name)
        extra = self.overhead_ms.get(key, 0.0)
        if route.predicted_ms is not None and route.learn:
            # learn the residual itself: the serving path's overhead, and also what the model misses
            # (batcher waits, scheduling). Its median, not its mean: bench/workload's totals are
            # heavy-tailed, and a mean (EWMA) of total - queue - compute left digits 37 % low at the
            # median, an EWMA of the residual 15 % high
            _track_median(self.overhead_ms, key, total_ns / 1e6 - (route.predicted_ms - extra))
        elif key not in self.overhead_ms:  # one estimator per key: only a seed from other answers
            self.overhead_ms[key] = max(0.0, (total_ns - result.queue_ns - result.compute_ns) / 1e6)
        alone = not any(w != var.name and route.worker.rows_in_flight(w) for w in route.worker.loaded_names())
        if (prof := self.catalog.profiles.get(var.name)) is not None and result.batch_size and result.compute_ns \
                and alone:  # time-sharing with other variants is predicted apart (``shared``)
            ratio = result.compute_ns / 1e6 / prof.predict_ms(result.batch_size)
            _ewma(self.slowdown, key, min(10.0, max(0.5, ratio)), 0.1, start=1.0)
        default_binary = plan.params.binary_data_output
        wanted = req.outputs
        outputs = []
        for spec in plan.signature.outputs:
            binary = default_binary
            if wanted is not None:
                match = next((o for o in wanted if o.name == spec.name), None)
                if match is None:
                    continue
                binary = default_binary if match.binary is None else match.binary
            arr: np.ndarray = result.outputs[spec.name]
            outputs.append(InferOutput(spec.name, spec.datatype, tuple(arr.shape), arr, binary))
        params = {
            "variant": var.name, "architecture": var.architecture, "worker": route.worker.name,
            "reason": route.reason, "accuracy": var.accuracy, "accuracy_source": var.accuracy_source,
            "predicted_ms": None if route.predicted_ms is None else round(route.predicted_ms, 3),
            "cost_usd": None if route.cost_per_1k is None else route.cost_per_1k / 1000 * rows,
            "queue_ms": round(result.queue_ns / 1e6, 3), "compute_ms": round(result.compute_ns / 1e6, 3),
            "batch_size": result.batch_size, "total_ms": round(total_ns / 1e6, 3),
        }  # fmt: skip
        version = var.short_name if not plan.scope.startswith("task") else var.name
        return InferResponse(req.model, version, outputs, req.id,
                             {k: v for k, v in params.items() if v is not None})  # fmt: skip

    # ---- management -----------------------------------------------------------------------
    async def register(self, **kwargs: Any) -> tuple[Architecture, Variant]:
        if kwargs.get("threads") is None:  # the baseline fits a worker's cores
            kwargs["threads"] = self.cluster.cores_per_worker
        async with self.busy_section():
            arch, variant = await asyncio.to_thread(self.registry.register, **kwargs)
        self.catalog.refresh()
        self.log_decision("register", f"registered {arch.name} for task {arch.task} "
                          f"(accuracy {arch.accuracy} {arch.accuracy_source})", architecture=arch.name)  # fmt: skip
        if self.ready:
            await self.ensure_loaded(arch.name)
        if self.settings.profile_on_register:
            self.start_profiling(arch.name)
        return arch, variant

    async def remove(self, arch: str) -> None:
        if arch not in self.catalog.architectures:
            raise NotFound(f"unknown architecture '{arch}'")
        for v in self.catalog.by_arch.get(arch, []):
            for w in self.cluster.workers:
                if w.assigned(v.name):  # restarting workers too: they must not reload it
                    await w.unload(v.name)
        await asyncio.to_thread(self.registry.remove, arch)
        self.catalog.refresh()
        self.log_decision("remove", f"removed architecture {arch}", architecture=arch)
