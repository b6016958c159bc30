"""Assemble and run a server: registry + cluster + data plane + REST on uvicorn (+ gRPC on grpc.aio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator

import uvicorn

from infaas.cluster import LocalCluster
from infaas.frontend.dataplane import DataPlane
from infaas.frontend.rest import build_app
from infaas.registry import Registry
from infaas.settings import Settings

log = logging.getLogger("infaas.server")


def build(settings: Settings):
    """The REST app and its data plane, for these settings (workers start with the app)."""
    registry = Registry.open(settings.data_dir)
    cluster = LocalCluster(settings.workers, settings.cores_per_worker,
                           allow_spinning=settings.ort_allow_spinning,
                           start_timeout_s=settings.worker_start_timeout_s)  # fmt: skip
    dp = DataPlane(registry, cluster, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        await dp.start()
        grpc_frontend = None
        if settings.grpc_port is not None:
            from infaas.frontend.grpc_server import GrpcFrontend

            grpc_frontend = GrpcFrontend(dp)
            await grpc_frontend.start(settings.host, settings.grpc_port)
        log.info("infaas ready: %d workers, %d architectures", len(cluster.workers),
                 len(dp.catalog.architectures))  # fmt: skip
        try:
            yield
        finally:
            if grpc_frontend is not None:
                await grpc_frontend.stop()
            await dp.stop()
            registry.close()

    return build_app(dp, lifespan=lifespan), dp


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                          log_level="warning", access_log=False, lifespan="on",
                          timeout_keep_alive=30)  # fmt: skip


def serve(settings: Settings) -> None:
    """Run in the foreground until interrupted."""
    app, _ = build(settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()


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
        self.settings = settings
        self.app, self.dataplane = build(settings)
        self.server = uvicorn.Server(uvicorn_config(self.app, settings))
        self.thread = threading.Thread(target=self._run, name="infaas-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

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
        self.server.config.setup_event_loop = lambda: None  # type: ignore[attr-defined]
        await self.server.serve()

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.server.started or self.error or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError(f"server did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
