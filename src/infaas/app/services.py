"""The composition root: builds every part once and hands each its collaborators through its
constructor (no part builds its peers; nothing is wired by assigning attributes afterwards).

    store -> registry -> catalog, cluster backend
    decision log, latency model, metrics
    placement (loads, cold starts, swaps) <- profiling, registration
    router (the request path)            <- REST, gRPC doors; the job runner
    autoscaler, job runner               <- run by the frontend that holds the controller lease
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infaas.catalog import Catalog
from infaas.cluster import LocalCluster
from infaas.cluster.base import ClusterBackend
from infaas.control import Autoscaler, JobRunner
from infaas.control.leader import Leadership, frontend_id
from infaas.control.placement import Placement
from infaas.control.profiling import Profiling
from infaas.control.registration import Registration
from infaas.decisions import Background, DecisionLog
from infaas.errors import InvalidInput
from infaas.frontend.views import Views
from infaas.policy.latency import LatencyModel
from infaas.policy.policies import policy_named, scaling_from
from infaas.registry import Registry
from infaas.registry.scratch import own_tempdir
from infaas.serving.door import Door, LoopLag, Throttle
from infaas.serving.metrics import Metrics
from infaas.serving.regions import Regions
from infaas.serving.router import Router
from infaas.settings import Settings

log = logging.getLogger("infaas.app")


@dataclass
class Services:
    """Everything one server runs, built once and started / stopped in order."""

    settings: Settings
    registry: Registry
    catalog: Catalog
    cluster: ClusterBackend
    decisions: DecisionLog
    background: Background
    latency: LatencyModel
    metrics: Metrics
    placement: Placement
    profiling: Profiling
    registration: Registration
    router: Router
    views: Views
    jobs: JobRunner
    autoscaler: Autoscaler | None
    leadership: Leadership
    doors: dict[str, Door]  # admission at each door (rest, grpc), sharing one event-loop lag monitor
    regions: Regions  # the clients' system shared-memory regions (Triton's extension)
    _started: bool = field(default=False, repr=False)
    _tempdir: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    async def start(self) -> None:
        """Lease first (so a Ray cluster knows whether this frontend creates workers or attaches to
        them), then the workers and their variants, then the controller and the job runner if this
        frontend leads."""
        self._tempdir.enter_context(own_tempdir(self.settings.data_dir))  # libraries' temporary files too
        self.doors["rest"].lag.ensure_running()  # the doors' event-loop lag monitor
        await self.leadership.step()
        await self.cluster.start()
        self.catalog.use_kind(self.cluster.kind)  # a Ray cluster's workers may be another kind than this machine
        await self.registration.load_all()
        self.router.ready = True
        self.profiling.profile_new_kind()
        self.background.spawn(self.registration.follow_store())
        self.background.spawn(self._publish_decisions())
        self._started = True
        if self.leadership.leader:
            await self.lead()
        await self.leadership.start()

    async def _publish_decisions(self) -> None:
        """Once a second, this frontend's new control decisions to the store (for the others)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.decisions.publish()
            except Exception as exc:  # the store unreachable: the next second tries again
                log.warning("could not publish decisions to the store: %s", exc)

    async def lead(self) -> None:
        """This frontend holds the controller lease: run the controller and the job runner."""
        if not self._started:  # the first lease step comes before the workers: start() leads after them
            return
        if self.autoscaler is not None:
            self.autoscaler.start()
        self.jobs.start()

    async def follow(self) -> None:
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        await self.jobs.stop()

    async def stop(self) -> None:
        """Stop every part in order. A part whose peer is gone (the store, Ray, a worker) cannot stop
        cleanly: that is one log line, and the parts after it still stop."""
        if self.leadership.leader:
            await _quietly("the controller and the job runner", self.follow)
        self.router.ready = False
        await _quietly("background tasks", self.background.cancel)
        await _quietly("the workers", self.cluster.stop)  # still holding the lease: the last frontend out stops Ray's
        await _quietly("the controller lease", self.leadership.stop)
        await _quietly("the metadata store", self.registry.close)
        await self.doors["rest"].lag.stop()
        self.regions.close()
        self._tempdir.close()


async def _quietly(what: str, step: Callable[[], Any]) -> None:
    try:
        result = step()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        why = str(exc).splitlines()[0][:200] if str(exc) else ""
        log.warning("shutdown: could not stop %s cleanly (%s%s)", what, type(exc).__name__, f": {why}" if why else "")


def build_cluster(settings: Settings, registry: Registry, leadership: Leadership) -> ClusterBackend:
    if settings.cluster == "ray":
        try:
            from infaas.cluster.ray import RayCluster
        except ImportError:
            raise InvalidInput("--cluster ray needs the ray extra: pip install 'infaas[ray]'") from None
        return RayCluster(
            registry.store,
            workers=settings.workers,
            cores_per_worker=settings.cores_per_worker or 1,
            address=settings.ray_address,
            namespace=settings.ray_namespace,
            memory_mb=settings.worker_memory_mb,
            allow_spinning=settings.ort_allow_spinning,
            start_timeout_s=max(60.0, settings.worker_start_timeout_s),
            max_workers=settings.max_workers,
            manages=lambda: leadership.leader,
            fence=leadership.fence,
            frontend_id=leadership.holder,
            node_ip=settings.ray_node_ip,
            node_host=settings.node_host,
            node_ports=settings.port_range(),
            max_frame_bytes=4 * settings.max_request_bytes,
        )
    return LocalCluster(
        settings.workers,
        settings.cores_per_worker,
        allow_spinning=settings.ort_allow_spinning,
        start_timeout_s=settings.worker_start_timeout_s,
    )


def _metrics(cluster: ClusterBackend, decisions: DecisionLog) -> Metrics:
    """Prometheus metrics; queue depths, worker liveness and decision counts read at scrape time."""
    return Metrics(
        lambda: ((v, w.name, w.outstanding(v)) for w in cluster.workers for v in w.loaded),
        lambda: ((w.name, w.alive, w.restarts) for w in cluster.workers),
        decisions=lambda: (decisions.counts, decisions.not_kept),
    )


def _online_busy(scaler: Autoscaler | None) -> str | None:
    """Why offline jobs pause now: an online variant the controller judges overloaded (or None)."""
    if scaler is None or not scaler.overloaded:
        return None
    name, why = next(iter(scaler.overloaded.items()))
    return f"online variant {name} is overloaded ({why})"


PUBLISHED_DECISIONS = 500  # of each frontend's control decisions, kept in the shared store


def _decision_log(settings: Settings, registry: Registry, frontend: str) -> DecisionLog:
    """The decision logs; each frontend's control decisions also go to the store (record kind
    ``decisions``, named by frontend), where every other frontend reads them."""
    store = registry.store

    def publish(who: str, entries: list[dict]) -> None:
        store.put("decisions", who, None, {"frontend": who, "entries": entries[-PUBLISHED_DECISIONS:]})

    def remote() -> list[tuple[str, list[dict]]]:
        return [(body["frontend"], body["entries"]) for body in store.list("decisions")]

    return DecisionLog(settings.decision_log_size, frontend, publish, remote)


def build_services(settings: Settings) -> Services:
    registry = Registry.open(settings.data_dir, settings.store)
    decisions = _decision_log(settings, registry, frontend_id())
    background = Background(decisions)
    services: Services | None = None  # bound below; the lease's callbacks run only after start()

    async def lead() -> None:
        assert services is not None
        await services.lead()

    async def follow() -> None:
        assert services is not None
        await services.follow()

    leadership = Leadership(
        registry.store,
        decisions.frontend,
        ttl_s=settings.lease_s,
        url=f"http://{settings.host}:{settings.port}",
        on_gain=lead,
        on_lose=follow,
        log_decision=decisions.log_decision,
    )
    cluster = build_cluster(settings, registry, leadership)
    catalog = Catalog(registry, cluster.kind)
    latency = LatencyModel()
    metrics = _metrics(cluster, decisions)
    placement = Placement(registry, catalog, cluster, settings, latency, decisions, background)
    profiling = Profiling(registry, catalog, cluster, settings, placement, decisions, background)
    policy = policy_named(settings.policy, scaling_from(settings))
    scaler = Autoscaler(placement, settings, policy, may_act=leadership.holds) if settings.autoscale else None
    regions = Regions(released=lambda key: [w.forget_shm(key) for w in cluster.workers])
    flagged = (lambda: scaler.overloaded) if scaler is not None else frozenset
    router = Router(catalog, cluster, settings, metrics, latency, placement, decisions, policy, flagged, regions)
    registration = Registration(
        registry, catalog, settings, placement, profiling, decisions, background, serving=lambda: router.ready
    )
    views = Views(
        catalog, cluster, settings, metrics, worker_report=(lambda: scaler.workers) if scaler is not None else dict
    )

    jobs = JobRunner(
        router,
        decisions,
        registry.store,
        settings.data_dir,
        settings.job_batch_rows,
        busy=lambda: _online_busy(scaler),
        max_failures=settings.job_max_failures,
        job_roots=settings.job_roots,
        max_input_bytes=settings.max_management_bytes,
    )
    services = Services(
        settings,
        registry,
        catalog,
        cluster,
        decisions,
        background,
        latency,
        metrics,
        placement,
        profiling,
        registration,
        router,
        views,
        jobs,
        scaler,
        leadership,
        _doors(settings, metrics),
        regions,
    )
    return services


def _doors(settings: Settings, metrics: Metrics) -> dict[str, Door]:
    lag = LoopLag()
    throttle = Throttle(settings.door_throttle_busy) if settings.door_throttle else None
    return {
        name: Door(name, settings.max_inflight_requests, settings.max_loop_lag_ms, lag, metrics.door_refused, throttle)
        for name in ("rest", "grpc")
    }
