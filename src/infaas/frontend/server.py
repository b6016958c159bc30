"""The composition root: registry + cluster + data plane + controller + job runner + protocol doors.

Each part gets the narrow interface it needs from here (the controller an actuator, the job runner
an inference port and a "busy" callable); no part builds its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from infaas.cluster import LocalCluster
from infaas.control import Autoscaler, JobRunner
from infaas.control.leader import Leadership, frontend_id
from infaas.errors import InvalidInput
from infaas.frontend.dataplane import DataPlane
from infaas.frontend.rest import build_app
from infaas.registry import Registry
from infaas.settings import Settings

log = logging.getLogger("infaas.server")


@dataclass
class Services:
    """Everything one server runs, built once and started / stopped in order."""

    settings: Settings
    registry: Registry
    dataplane: DataPlane
    jobs: JobRunner
    autoscaler: Autoscaler | None
    leadership: Leadership

    async def start(self) -> None:
        """Lease first (so a Ray cluster knows whether this frontend creates workers or attaches to
        them), then the data plane, then the controller and the job runner if this frontend leads."""
        await self.leadership.step()
        await self.dataplane.start()
        self.leadership.on_gain, self.leadership.on_lose = self._lead, self._follow
        if self.leadership.leader:
            await self._lead()
        await self.leadership.start()

    async def _lead(self) -> None:
        if self.autoscaler is not None:
            self.autoscaler.start()
        self.jobs.start()

    async def _follow(self) -> None:
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        await self.jobs.stop()

    async def stop(self) -> None:
        if self.leadership.leader:
            await self._follow()
        await self.dataplane.stop()  # still holding the lease: the last frontend out stops the Ray workers
        await self.leadership.stop()
        self.registry.close()


def build_cluster(settings: Settings, registry: Registry, leadership: Leadership):
    if settings.cluster == "ray":
        try:
            from infaas.cluster.ray import RayCluster
        except ImportError:
            raise InvalidInput("--cluster ray needs the ray extra: pip install 'infaas[ray]'") from None
        return RayCluster(registry.store, workers=settings.workers, cores_per_worker=settings.cores_per_worker or 1,
                          address=settings.ray_address, namespace=settings.ray_namespace,
                          memory_mb=settings.worker_memory_mb, allow_spinning=settings.ort_allow_spinning,
                          start_timeout_s=max(60.0, settings.worker_start_timeout_s),
                          max_workers=settings.max_workers, manages=lambda: leadership.leader,
                          fence=leadership.fence, frontend_id=leadership.holder)  # fmt: skip
    return LocalCluster(settings.workers, settings.cores_per_worker,
                        allow_spinning=settings.ort_allow_spinning,
                        start_timeout_s=settings.worker_start_timeout_s)  # fmt: skip


def build_services(settings: Settings) -> Services:
    registry = Registry.open(settings.data_dir, settings.store)
    leadership = Leadership(registry.store, frontend_id(), ttl_s=settings.lease_s,
                            url=f"http://{settings.host}:{settings.port}")  # fmt: skip
    cluster = build_cluster(settings, registry, leadership)
    dp = DataPlane(registry, cluster, settings)
    leadership.log_decision = dp.log_decision
    scaler = Autoscaler(dp, settings) if settings.autoscale else None
    if scaler is not None:
        dp.worker_report = lambda: scaler.workers
        dp.flagged = lambda: scaler.overloaded
        scaler.may_act = leadership.holds

    def busy() -> str | None:
        if scaler is None or not scaler.overloaded:
            return None
        name, why = next(iter(scaler.overloaded.items()))
        return f"online variant {name} is overloaded ({why})"

    jobs = JobRunner(dp, registry.store, settings.data_dir, settings.job_batch_rows, busy=busy,
                     max_failures=settings.job_max_failures, job_roots=settings.job_roots,
                     max_input_bytes=settings.max_management_bytes)  # fmt: skip
    return Services(settings, registry, dp, jobs, scaler, leadership)


def build(settings: Settings):
    """The apps (inference, and management when it has its own listener) and the services."""
    services = build_services(settings)
    separate = settings.management_port is not None

    @contextlib.asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        await services.start()
        grpc_frontend = None
        if settings.grpc_port is not None:
            from infaas.frontend.grpc_server import GrpcFrontend

            grpc_frontend = GrpcFrontend(services.dataplane)
            await grpc_frontend.start(settings.host, settings.grpc_port)
        log.info("infaas ready: %d workers, %d architectures", len(services.dataplane.cluster.workers),
                 len(services.dataplane.catalog.architectures))  # fmt: skip
        try:
            yield
        finally:
            if grpc_frontend is not None:
                await grpc_frontend.stop()
            await services.stop()

    app = build_app(services, lifespan=lifespan, inference=True, management=not separate)
    management = build_app(services, inference=False, management=True) if separate else None
    return app, management, services


def uvicorn_config(app, settings: Settings, host: str | None = None, port: int | None = None) -> uvicorn.Config:
    return uvicorn.Config(app, host=host or settings.host, port=settings.port if port is None else port,
                          loop="uvloop", http="httptools", log_level="warning", access_log=False,
                          lifespan="on" if port is None else "off", timeout_keep_alive=30,
                          limit_concurrency=settings.max_connections)  # fmt: skip


def _servers(app, management, settings: Settings) -> list[uvicorn.Server]:
    servers = [uvicorn.Server(uvicorn_config(app, settings))]
    if management is not None:
        servers.append(uvicorn.Server(uvicorn_config(
            management, settings, settings.management_host or settings.host, settings.management_port)))
    return servers


async def _serve_all(servers: list[uvicorn.Server]) -> None:
    """The inference server first (its lifespan starts the services), then the management one."""
    main = asyncio.create_task(servers[0].serve())
    while not servers[0].started and not main.done():
        await asyncio.sleep(0.02)
    others = [asyncio.create_task(s.serve()) for s in servers[1:]]
    try:
        await main
    finally:
        for s in servers[1:]:
            s.should_exit = True
        await asyncio.gather(*others, return_exceptions=True)


def serve(settings: Settings) -> None:
    """Run in the foreground until interrupted."""
    if settings.management_port == 0:
        settings = settings.with_overrides(management_port=free_port(settings.management_host or settings.host))
    app, management, _ = build(settings)
    servers = _servers(app, management, settings)
    if len(servers) == 1:
        servers[0].run()
        return
    import uvloop

    uvloop.run(_serve_all(servers))  # a signal stops whichever server holds the handler; the rest follow


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """A server in a thread of this process (embedded use: demo, tests, benchmarks)."""

    def __init__(self, settings: Settings) -> None:
        if settings.port == 0:
            settings = settings.with_overrides(port=free_port(settings.host))
        if settings.grpc_port == 0:
            settings = settings.with_overrides(grpc_port=free_port(settings.host))
        if settings.management_port == 0:
            settings = settings.with_overrides(management_port=free_port(settings.management_host or settings.host))
        self.settings = settings
        self.app, self.management_app, self.services = build(settings)
        self.dataplane = self.services.dataplane
        self.servers = _servers(self.app, self.management_app, settings)
        self.server = self.servers[0]
        self.thread = threading.Thread(target=self._run, name="infaas-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def management_url(self) -> str:
        """Where the management API answers (the inference URL unless it has its own listener)."""
        if self.settings.management_port is None:
            return self.url
        return f"http://{self.settings.management_host or self.settings.host}:{self.settings.management_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (tritonclient's form); set ``grpc_port`` (0: any free port)."""
        if self.settings.grpc_port is None:
            raise RuntimeError("this server has no gRPC endpoint (grpc_port is unset)")
        return f"{self.settings.host}:{self.settings.grpc_port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        for s in self.servers:
            s.config.setup_event_loop = lambda: None  # type: ignore[attr-defined]
        await _serve_all(self.servers)

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.server.started or self.error or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError(f"server did not start: {self.error!r}")
        for s in self.servers[1:]:
            for _ in range(int(timeout * 20)):
                if s.started or self.error:
                    break
                deadline.wait(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
