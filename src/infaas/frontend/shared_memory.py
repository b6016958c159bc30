"""Triton's shared-memory extensions over REST: system shared memory (register, unregister, status)
and, for clients such as perf_analyzer that clear both kinds before a run, CUDA shared memory's
status and unregister (nothing is ever registered there: registering says why).

The routes are guarded by the management API's keys: a region gives the server a view of the
client's memory. The regions themselves live in :class:`infaas.serving.regions.Regions`.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas.errors import InvalidInput
from infaas.frontend.web import guard, json_response, read_body, services_of

CUDA_UNSUPPORTED = "CUDA shared memory is not supported: infaas serves from CPU workers (use system shared memory)"


def _name(request: Request) -> str | None:
    return request.path_params.get("name")


async def status(request: Request) -> Response:
    return json_response(services_of(request).regions.status(_name(request)))


async def register(request: Request) -> Response:
    body = await read_body(request, 1 << 16)
    try:
        opts = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"register body is not JSON: {exc}") from None
    if not isinstance(opts, dict):
        raise InvalidInput("register body must be a JSON object with key, offset and byte_size")
    services_of(request).regions.register(_name(request), opts.get("key"), opts.get("offset", 0), opts.get("byte_size"))
    return Response(status_code=200)


async def unregister(request: Request) -> Response:
    services_of(request).regions.unregister(_name(request))
    return Response(status_code=200)


async def cuda_status(request: Request) -> Response:
    name = _name(request)
    if name is not None:
        raise InvalidInput(f"no CUDA shared-memory region named '{name}' is registered")
    return json_response([])


async def cuda_register(request: Request) -> Response:
    raise InvalidInput(CUDA_UNSUPPORTED)


async def cuda_unregister(request: Request) -> Response:
    return Response(status_code=200)  # nothing is registered: unregistering is a no-op, as for an unknown name


def shared_memory_routes(keys: tuple[str, ...]) -> list[Route]:
    system, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
    return [
        Route(system + "/status", guard(status, keys)),
        Route(system + "/region/{name}/status", guard(status, keys)),
        Route(system + "/region/{name}/register", guard(register, keys), methods=["POST"]),
        Route(system + "/region/{name}/unregister", guard(unregister, keys), methods=["POST"]),
        Route(system + "/unregister", guard(unregister, keys), methods=["POST"]),
        Route(cuda + "/status", guard(cuda_status, keys)),
        Route(cuda + "/region/{name}/status", guard(cuda_status, keys)),
        Route(cuda + "/region/{name}/register", guard(cuda_register, keys), methods=["POST"]),
        Route(cuda + "/region/{name}/unregister", guard(cuda_unregister, keys), methods=["POST"]),
        Route(cuda + "/unregister", guard(cuda_unregister, keys), methods=["POST"]),
    ]
