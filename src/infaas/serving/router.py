"""The request path, and nothing else: resolve (what is asked, by when), route (which variant on
which worker, and why), execute (on the worker, within the deadline), respond. REST, gRPC and
the job runner all serve through :meth:`Router.infer`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Collection
from typing import Protocol

import numpy as np

from infaas.catalog import Catalog
from infaas.cluster.base import ClusterBackend, WorkerHandle, WorkerResult
from infaas.decisions import DecisionLog
from infaas.errors import DeadlineExceeded, InfaasError, InvalidInput, Overloaded, ReplicaGone, Unavailable
from infaas.policy import (
    BatchTooLarge,
    Candidate,
    Choice,
    NoCandidate,
    Objective,
    Option,
    Saturated,
    Slot,
    Unreachable,
    select_loaded,
)
from infaas.policy.latency import LatencyModel
from infaas.policy.policies import Policy
from infaas.profiler.inputs import axis_spec
from infaas.protocol.params import RequestParams, parse_request_params
from infaas.protocol.shm import Shared
from infaas.protocol.types import InferOutput, InferRequest, InferResponse, costly, materialize
from infaas.protocol.validate import check_inputs
from infaas.registry import Signature, Variant
from infaas.registry.types import axis_length
from infaas.serving.metrics import Metrics
from infaas.serving.regions import Regions, deliver
from infaas.settings import Settings


class ColdStarts(Protocol):
    """What the router needs from the placement (:class:`infaas.control.placement.Placement`):
    which variant to cold-start, a cold start bounded by a request's deadline, a prefetch."""

    def first_choice(self, variants: list[Variant], statuses: tuple[str, ...] = ("ready",)) -> Variant | None: ...
    async def cold_start(self, variant: Variant, deadline: float, deadline_source: str) -> WorkerHandle: ...
    def prefetch(self, variant: Variant) -> None: ...


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


class Router:
    def __init__(
        self,
        catalog: Catalog,
        cluster: ClusterBackend,
        settings: Settings,
        metrics: Metrics,
        latency: LatencyModel,
        placement: ColdStarts,
        decisions: DecisionLog,
        policy: Policy,
        flagged: Callable[[], Collection[str]] = frozenset,
        regions: Regions | None = None,
    ) -> None:
        self.catalog = catalog
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.latency = latency
        self.placement = placement
        self.decisions = decisions
        self.policy = policy
        self.regions = regions  # the clients' shared-memory regions (None: requests may not name any)
        self.flagged = flagged  # variants the controller flags overloaded (the original policy avoids them)
        self.ready = False  # set once the server has started, cleared when it stops
        self._loaded_options: dict[tuple[str, str | None], tuple] = {}
        self._pruned_at: tuple = ()  # the placement (workers' versions) last pruned for

    async def infer(self, req: InferRequest, offline: bool = False) -> InferResponse:
        """Serve one request in four steps: resolve, route, execute, respond. ``offline``: a batch
        job's request (low priority, the longest deadline, not logged per batch)."""
        start = time.perf_counter_ns()
        route: Route | None = None
        try:
            plan = self._resolve(req, offline)
            self._bind(req)
            if costly(req.inputs):
                await asyncio.to_thread(materialize, req.inputs)
            else:
                materialize(req.inputs)
            route = await self._route(req, plan, offline)
            try:
                result = await self._execute(plan, route, req, offline)
            except ReplicaGone:  # this frontend's view was older than an unload; nothing ran: route again
                route.worker.forget(route.variant.name)
                route = await self._route(req, plan, offline)
                result = await self._execute(plan, route, req, offline)
        except InfaasError as exc:
            model = req.model if req.model in self.catalog.known_names else "(unknown)"  # bounded labels
            self.metrics.failure(model, route.variant.name if route else "", exc.status, time.perf_counter_ns() - start)
            raise
        return self._respond(req, plan, route, result, start)

    # ---- resolve ---------------------------------------------------------------------------
    def _bind(self, req: InferRequest) -> None:
        """Tensors in the clients' shared-memory regions: inputs read in place, outputs' spans noted."""
        if any(i.shm is not None for i in req.inputs) or any(o.shm is not None for o in req.outputs or ()):
            if self.regions is None:
                raise InvalidInput("this server takes no tensors in shared memory")
            self.regions.bind(req)

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
        arrived = req.arrival if req.arrival is not None else now
        deadline, why = self._deadline(arrived, req, params, offline)
        objective = Objective(
            params.latency_ms,
            params.min_accuracy,
            params.max_cost,
            params.allow_estimated,
            axis_length(axis_spec(sig), {i.name: i.shape for i in req.inputs}),  # as the worker reads it
        )
        if deadline <= now:
            # an objective no variant could meet, queues or not, is the caller's error (400) whenever it
            # is noticed; only a reachable one that ran out of time waiting is the server's (503)
            if params.latency_ms is not None and (why_not := self._unreachable(req, variants, rows, scope, objective)):
                raise InvalidInput(why_not)
            if req.via:
                self.metrics.door_refused.labels(req.via, "expired").inc()
            waited = f" after waiting {(now - arrived) * 1000:.0f} ms in the server" if now > arrived + 1e-3 else ""
            raise DeadlineExceeded(f"the request's deadline ({why}) had passed{waited}; its tensors were not decoded")
        return Plan(scope, sig, variants, rows, params, objective, deadline, why)

    def _unreachable(
        self, req: InferRequest, variants: list[Variant], rows: int, scope: str, objective: Objective
    ) -> str | None:
        """Why no variant could meet ``objective`` whatever its queues, as the policy says it (None: it
        could). Pure: nothing is loaded or logged."""
        ordered, loaded = self._scope_options(req.model, req.version, self._runnable(variants))
        try:
            self.policy.select(objective, loaded, ordered, rows, scope, self._live, self.flagged())
        except Unreachable as exc:
            return str(exc)
        except Saturated:
            return None
        return None

    def _saturated(self, exc: Saturated, plan: Plan) -> Choice:
        """The variant that meets the objective when idle predicts over it now: a probe of its replica
        when that is idle (what was learned there kept it refused; LatencyModel.probe), else a 429,
        the request counted as demand by that replica's worker (the autoscaler of any frontend reads it)."""
        worker = next((w for w in self.cluster.workers if w.name == exc.worker), None)
        variant, profile = self.catalog.variants.get(exc.variant or ""), self.catalog.profiles.get(exc.variant or "")
        if worker is not None and variant is not None and profile is not None and plan.objective.latency_ms:
            idle = not any(worker.rows_in_flight(v) for v in worker.loaded_names())
            if idle and self.latency.probe((worker.name, variant.name), time.monotonic()):
                predicted = plan.objective.latency_ms + exc.wait_ms
                return Choice(variant, worker.name, predicted, profile.cost_per_1k, f"probe of an idle replica: {exc}")
            worker.turned_away(variant.name, plan.rows)
        raise Overloaded(str(exc), retry_after_s=max(0.0, exc.wait_ms / 1000)) from None

    def _live(self, name: str) -> tuple[Slot, ...]:
        """The slots of the workers hosting ``name`` (queue, batching, correction of each)."""
        return tuple(self._slot(w, name) for w in self.cluster.workers if w.hosts(name))

    def _deadline(self, now: float, req: InferRequest, params: RequestParams, offline: bool) -> tuple[float, str]:
        """The tightest of the server's default, the objective's latency, the request's timeout, the
        server's ceiling and the caller's own deadline; with what set it."""
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
        return deadline, why

    # ---- route -----------------------------------------------------------------------------
    async def _route(self, req: InferRequest, plan: Plan, offline: bool) -> Route:
        """Which variant serves, on which worker, and why (policy.select; a cold start if needed)."""
        if plan.objective.empty or plan.scope.startswith("variant"):
            chosen, worker_name, reason = await self._route_loaded(req, plan)
            predicted = cost = None
            learn = False
        else:
            chosen, worker_name, reason, predicted, cost, learn = await self._route_objective(req, plan, offline)
        # the worker is looked up now: the placement may have changed while a cold start ran
        worker = next((w for w in self.cluster.workers if w.name == worker_name and w.hosts(chosen.name)), None)
        if worker is None:
            raise Unavailable(
                f"{chosen.name} left worker {worker_name} while this request was routed "
                "(unloaded, restarted or removed); retry"
            )
        return Route(chosen, worker, reason, predicted, cost, learn)

    async def _route_loaded(self, req: InferRequest, plan: Plan) -> tuple[Variant, str, str]:
        """No objective (or an explicit variant): the most accurate loaded variant that takes the
        batch, on its least-busy worker; a cold start when none is loaded."""
        members = self.catalog.scope_names(req.model, req.version, plan.variants)
        hosts: dict[str, list[tuple[str, int]]] = {}
        for w in self.cluster.workers:  # only what is loaded: a scope may have hundreds of variants
            for name in w.loaded_names():
                if name in members:
                    hosts.setdefault(name, []).append((w.name, w.outstanding(name)))
        candidates = [
            Candidate(self.catalog.variants[n], tuple(h)) for n, h in hosts.items() if n in self.catalog.variants
        ]  # a variant removed meanwhile is not a candidate
        try:
            decision = select_loaded(candidates, plan.rows, plan.scope)
            return decision.variant, decision.worker, decision.reason
        except BatchTooLarge as exc:
            raise InvalidInput(str(exc)) from None
        except NoCandidate as exc:
            # nothing loaded (unloaded when idle, or never loaded): a cold start
            explicit = ("ready", "rejected") if plan.scope.startswith("variant") else ("ready",)
            chosen = self.placement.first_choice([v for v in plan.variants if v.max_batch >= plan.rows], explicit)
            if chosen is None:
                raise Unavailable(str(exc)) from None
            worker = await self.placement.cold_start(chosen, plan.deadline, plan.deadline_source)
            return chosen, worker.name, f"{exc}: cold start of {chosen.name}"

    async def _route_objective(self, req: InferRequest, plan: Plan, offline: bool) -> tuple:
        """An objective: the policy's choice among loaded and unloaded variants, with predictions
        from the latency model; a cold start or a prefetch when it says so."""
        ordered, loaded = self._scope_options(req.model, req.version, self._runnable(plan.variants))
        try:
            choice = self.policy.select(
                plan.objective, loaded, ordered, plan.rows, plan.scope, self._live, self.flagged()
            )
        except Saturated as exc:
            choice = self._saturated(exc, plan)
        except Unreachable as exc:
            raise InvalidInput(str(exc)) from None
        chosen, worker_name = choice.variant, choice.worker
        learn = worker_name is not None and self.policy.learns_latency
        if worker_name is None:
            worker_name = (await self.placement.cold_start(chosen, plan.deadline, plan.deadline_source)).name
        elif choice.prefetch is not None:
            self.placement.prefetch(choice.prefetch)
        if not offline:
            self.decisions.log_decision(
                "select",
                choice.reason,
                scope=plan.scope,
                objective=_asked(plan.objective),
                variant=chosen.name,
                worker=worker_name,
                predicted_ms=choice.predicted_ms,
            )
        return chosen, worker_name, choice.reason, choice.predicted_ms, choice.cost_per_1k, learn

    def _slot(self, worker: WorkerHandle, name: str) -> Slot:
        if not self.policy.reads_slots:
            return worker.name, worker.rows_in_flight(name)
        in_flight = {v: worker.rows_in_flight(v) for v in worker.loaded_names()}
        return self.latency.slot(
            worker.name,
            name,
            in_flight,
            self.catalog.profiles,
            self.catalog.variants,
            running_ms=worker.running_ms(name),
            now=time.monotonic(),
        )

    def _runnable(self, variants: list[Variant]) -> list[Variant]:
        """The variants a worker runs as profiled: no more threads than a worker has cores (a
        2-thread variant on a 1-core worker runs on one thread, slower than its profile says, and
        the bench/workload decision log showed such variants cold-started for bursts, then
        downgraded, then cold-started again). All of them if none fits (served, not as profiled)."""
        cores = self.cluster.cores_per_worker
        fitting = [v for v in variants if v.threads <= cores]
        return fitting if any(v.status == "ready" for v in fitting) else variants

    def _scope_options(self, name: str, version: str | None, variants: list[Variant]) -> tuple[object, list[Option]]:
        """Cost-sorted options of a scope, and of its loaded variants; the latter cached until a
        worker's placement changes (loads, unloads, restarts) or the catalog is rebuilt, so a query
        does not rebuild them. A placement change also prunes what was learned about replicas that
        left their worker's target placement (a restarting worker keeps what it will reload)."""
        index = self.catalog.options(name, version, variants)
        placement = tuple(w.placement_version for w in self.cluster.workers)
        if placement != self._pruned_at:
            self._pruned_at = placement
            workers = {w.name: w for w in self.cluster.workers}
            self.latency.prune(lambda w, v: w in workers and workers[w].assigned(v))
        key = (name, version)
        cached = self._loaded_options.get(key)
        if cached is None or cached[0] != placement or cached[1] is not index:
            names = set().union(*(w.loaded_names() for w in self.cluster.workers))
            cached = (placement, index, [o for o in index.ordered if o.variant.name in names])
            self._loaded_options[key] = cached
        return index, cached[2]

    # ---- execute and respond -----------------------------------------------------------------
    async def _execute(self, plan: Plan, route: Route, req: InferRequest, offline: bool) -> WorkerResult:
        """Run on the worker; the deadline travels with the request, and a caller that gives up
        (deadline passed, disconnect, gRPC cancel) cancels it in the worker."""
        inputs = {i.name: i.data for i in req.inputs}
        drop_late = plan.params.drop_late
        wait = plan.deadline - time.monotonic() + self.settings.deadline_grace_s
        if not drop_late:  # the caller accepts a late answer: wait up to the server's ceiling
            wait = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(wait):
                return await route.worker.infer(
                    route.variant.name,
                    inputs,
                    plan.rows,
                    plan.deadline,
                    drop_late,
                    offline,
                    Shared.of(req.inputs, req.outputs),
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer from worker {route.worker.name} by the request's deadline "
                f"({plan.deadline_source}); the request was cancelled there"
            ) from None
        except (Overloaded, DeadlineExceeded):  # the worker's own refusal (admission, or dropped late)
            if route.predicted_ms is not None and route.predicted_ms <= (plan.objective.latency_ms or 0.0):
                self.metrics.selected_then_refused.labels(route.variant.name).inc()
            raise

    def _respond(self, req: InferRequest, plan: Plan, route: Route, result: WorkerResult, start: int) -> InferResponse:
        total_ns = time.perf_counter_ns() - start
        var, rows, worker = route.variant, plan.rows, route.worker
        self.metrics.success(
            req.model,
            var.name,
            rows,
            total_ns,
            result.queue_ns,
            result.compute_ns,
            result.batch_size,
            result.batch_pos == 0,
        )
        self.latency.answered(
            (worker.name, var.name),
            total_ms=total_ns / 1e6,
            queue_ms=result.queue_ns / 1e6,
            compute_ms=result.compute_ns / 1e6,
            batch_size=result.batch_size,
            predicted_ms=route.predicted_ms,
            from_slot=route.learn,
            profile=self.catalog.profiles.get(var.name),
            alone=not any(w != var.name and worker.rows_in_flight(w) for w in worker.loaded_names()),
            length=plan.objective.length,
            scale=result.scale,
            now=time.monotonic(),
        )
        params = {
            "variant": var.name,
            "architecture": var.architecture,
            "worker": worker.name,
            "reason": route.reason,
            "accuracy": var.accuracy,
            "accuracy_source": var.accuracy_source,
            "predicted_ms": None if route.predicted_ms is None else round(route.predicted_ms, 3),
            "cost_usd": None if route.cost_per_1k is None else route.cost_per_1k / 1000 * rows,
            "queue_ms": round(result.queue_ns / 1e6, 3),
            "compute_ms": round(result.compute_ns / 1e6, 3),
            "batch_size": result.batch_size,
            "total_ms": round(total_ns / 1e6, 3),
            # from the door's first sight of it (before its body was read) to this answer: what the
            # client saw, less the network
            "server_ms": round((time.monotonic() - req.arrival) * 1000, 3) if req.arrival is not None else None,
        }
        version = var.short_name if not plan.scope.startswith("task") else var.name
        outputs = _outputs(req, plan, result)
        deliver(req, outputs)
        return InferResponse(req.model, version, outputs, req.id, {k: v for k, v in params.items() if v is not None})


def _outputs(req: InferRequest, plan: Plan, result: WorkerResult) -> list[InferOutput]:
    """The outputs asked for (all when none is named), each binary or JSON as asked."""
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
    return outputs


def _asked(o: Objective) -> dict:
    """The objective a query stated, for its decision entry (what the dashboard shows as in use)."""
    return {
        k: v
        for k, v in (("latency_ms", o.latency_ms), ("min_accuracy", o.min_accuracy), ("max_cost", o.max_cost))
        if v is not None
    }
