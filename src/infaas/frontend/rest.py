"""KServe v2 REST (with Triton's binary, statistics, configuration and repository extensions).

Each endpoint is one small function that converts wire types and calls the composition root's
services (``request.app.state.services``): the router for inference, the views for metadata, the
placement for the repository extension. The management API lives in :mod:`infaas.frontend.management`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas.errors import Cancelled, DeadlineExceeded, InvalidInput
from infaas.frontend.management import management_routes
from infaas.frontend.shared_memory import shared_memory_routes
from infaas.frontend.web import (
    DoorMiddleware,
    arrival_of,
    error_response,
    guard,
    json_response,
    read_body,
    services_of,
)
from infaas.protocol import codec

if TYPE_CHECKING:
    from infaas.app.services import Services


def _model_args(request: Request) -> tuple[str, str | None]:
    p = request.path_params
    return p["model"], p.get("version")


async def _cancel_on_disconnect(request: Request, task: asyncio.Task) -> bool:
    """Cancel ``task`` when the client goes away (start only once the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return True


# ---- health and metadata ------------------------------------------------------------------
async def live(request: Request) -> Response:
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    return Response(status_code=200 if services_of(request).router.ready else 400)


async def server_metadata(request: Request) -> Response:
    return json_response(services_of(request).views.server_metadata())


async def model_metadata(request: Request) -> Response:
    return json_response(services_of(request).views.model_metadata(*_model_args(request)))


async def model_ready(request: Request) -> Response:
    return Response(status_code=200 if services_of(request).views.model_ready(*_model_args(request)) else 400)


async def model_config(request: Request) -> Response:
    return json_response(services_of(request).views.model_config(*_model_args(request)))


async def model_stats(request: Request) -> Response:
    p = request.path_params
    return json_response(services_of(request).views.model_stats(p.get("model"), p.get("version")))


# ---- inference ----------------------------------------------------------------------------
async def infer(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    model, version = _model_args(request)
    services.catalog.resolve(model, version)  # an unknown model is a 404 whatever the body
    arrival = arrival_of(request)
    if time.monotonic() - arrival > settings.request_timeout_s:  # past any deadline it may carry: body unread
        services.doors["rest"].count("expired")
        raise DeadlineExceeded(
            f"the request waited {time.monotonic() - arrival:.1f} s in the server, past the ceiling on any "
            f"deadline (request_timeout_s {settings.request_timeout_s:g}); its body was not read"
        )
    body = await read_body(request, settings.max_request_bytes)
    header = request.headers.get(codec.HEADER_LENGTH)
    if len(body) > 1 << 20:  # a large JSON header is parsed off the event loop
        req = await asyncio.to_thread(codec.decode_request, body, header, model, version, settings.max_request_elements)
    else:
        req = codec.decode_request(body, header, model, version, settings.max_request_elements)
    req.arrival, req.via = arrival, "rest"  # the deadline counts from the door
    # a client that disconnects cancels its request (in the worker too, if still queued)
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request, task))
    try:
        resp = await services.router.infer(req)
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled() or not gone.result():
            raise  # the server is stopping
        task.uncancel()
        raise Cancelled("the client disconnected; its request was cancelled") from None
    finally:
        gone.cancel()
    if (passage := request.scope.get("state", {}).get("passage")) is not None:
        passage.took(resp.parameters)  # the door's throttle learns the worker's queue wait
    content, headers = codec.encode_response(resp)
    return Response(content, 200, headers=headers)


# ---- repository extension -------------------------------------------------------------------
async def repository_index(request: Request) -> Response:
    rows = services_of(request).views.repository_index()
    body = await read_body(request, 1 << 16)
    if body:
        with contextlib.suppress(orjson.JSONDecodeError):
            opts = orjson.loads(body)
            if isinstance(opts, dict) and opts.get("ready"):
                return json_response([r for r in rows if r["state"] == "READY"])
    return json_response(rows)


async def repository_load(request: Request) -> Response:
    """Triton's repository extension: load a variant (or an architecture's default) on
    ``parameters.replicas`` workers (default 1)."""
    body = await read_body(request, 1 << 16)
    replicas = 1
    if body:
        try:
            opts = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"load body is not JSON: {exc}") from None
        value = (opts.get("parameters") or {}).get("replicas", 1) if isinstance(opts, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput("parameters.replicas must be an integer")
        replicas = value
    workers = await services_of(request).placement.place(request.path_params["model"], replicas)
    return json_response({"model": request.path_params["model"], "workers": workers})


async def repository_unload(request: Request) -> Response:
    workers = await services_of(request).placement.unplace(request.path_params["model"])
    return json_response({"model": request.path_params["model"], "workers": workers})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    return error_response(f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}", status)


def inference_routes(keys: tuple[str, ...], management_keys: tuple[str, ...]) -> tuple[list[Route], list[Route]]:
    """KServe v2 routes: those tried first (inference, health, server-wide), and the per-model
    metadata routes, tried after the management API (Starlette tries routes in order)."""
    base = "/v2/models/{model}"
    ver = base + "/versions/{version}"
    first = [Route(prefix + "/infer", guard(infer, keys), methods=["POST"]) for prefix in (base, ver)]
    first += [
        Route("/v2/health/live", guard(live)),  # probes need no key
        Route("/v2/health/ready", guard(ready)),
        Route("/v2", guard(server_metadata, keys)),
        Route("/v2/models/stats", guard(model_stats, keys)),
        Route("/v2/repository/index", guard(repository_index, keys), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", guard(repository_load, management_keys), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", guard(repository_unload, management_keys), methods=["POST"]),
        *shared_memory_routes(management_keys),
    ]
    last = []
    for prefix in (base, ver):
        last += [
            Route(prefix, guard(model_metadata, keys)),
            Route(prefix + "/ready", guard(model_ready, keys)),
            Route(prefix + "/config", guard(model_config, keys)),
            Route(prefix + "/stats", guard(model_stats, keys)),
        ]
    return first, last


def build_app(services: Services, lifespan=None, *, inference: bool = True, management: bool = True) -> Starlette:
    """The REST app: KServe v2 inference routes and / or the management API (/api/v1, /metrics)."""
    settings = services.settings
    keys = tuple(settings.api_keys)
    management_keys = tuple(settings.management_api_keys or settings.api_keys)
    first, last = inference_routes(keys, management_keys)
    routes: list[Route] = []
    if inference:
        routes += first
    if management:
        routes += management_routes(management_keys)
        if not inference:
            routes += [Route("/v2/health/live", guard(live)), Route("/v2/health/ready", guard(ready))]
    if inference:
        routes += last
    middleware = [Middleware(DoorMiddleware, door=services.doors["rest"])] if inference else []
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
        middleware=middleware,
    )
    app.state.services = services
    return app
