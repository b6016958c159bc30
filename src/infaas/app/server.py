"""Serving the composition root's parts: the ASGI apps with their lifespan (services, gRPC), uvicorn
servers in the foreground (``infaas serve``) or in a background thread (embedded use)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator

import uvicorn

from infaas.app.services import build_services
from infaas.frontend.rest import build_app
from infaas.settings import Settings

log = logging.getLogger("infaas.server")


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

            grpc_frontend = GrpcFrontend(services)
            await grpc_frontend.start(settings.host, settings.grpc_port)
        log.info(
            "infaas ready: %d workers, %d architectures",
            len(services.cluster.workers),
            len(services.catalog.architectures),
        )
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
    return uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on" if port is None else "off",
        timeout_keep_alive=30,
        limit_concurrency=settings.max_connections,
    )


def _servers(app, management, settings: Settings) -> list[uvicorn.Server]:
    servers = [uvicorn.Server(uvicorn_config(app, settings))]
    if management is not None:
        servers.append(
            uvicorn.Server(
                uvicorn_config(
                    management, settings, settings.management_host or settings.host, settings.management_port
                )
            )
        )
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
    signal.signal(signal.SIGTERM, _exit_zero)
    if len(servers) == 1:
        servers[0].run()
        return
    import uvloop

    uvloop.run(_serve_all(servers))  # a signal stops whichever server holds the handler; the rest follow


def _exit_zero(signum: int, frame: object) -> None:
    """SIGTERM outside uvicorn's own handling: before it starts, or when it re-raises the signal after a
    graceful shutdown. A server that stopped cleanly on SIGTERM exits 0, as process managers expect."""
    raise SystemExit(0)


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
