"""The management API (/api/v1, /metrics): one small function per endpoint, each converting wire
types and calling the composition root's services (registration, profiling, views, jobs ...)."""

from __future__ import annotations

import asyncio

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas.decisions import parse_kinds, parse_since
from infaas.errors import InvalidInput
from infaas.frontend.dashboard import dashboard_routes
from infaas.frontend.openapi import openapi_schema
from infaas.frontend.web import (
    error_response,
    guard,
    json_response,
    read_body,
    read_npz,
    replay,
    services_of,
)
from infaas.protocol.params import parse_bool, parse_number
from infaas.registry.types import runtime_of


async def metrics(request: Request) -> Response:
    return Response(services_of(request).metrics.exposition(), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    return json_response(openapi_schema())


# ---- tasks, architectures, variants ---------------------------------------------------------
async def list_tasks(request: Request) -> Response:
    return json_response([t.model_dump() for t in services_of(request).catalog.tasks.values()])


async def list_architectures(request: Request) -> Response:
    task = request.query_params.get("task")
    archs = services_of(request).catalog.architectures.values()
    return json_response([a.model_dump() for a in archs if task is None or a.task == task])


async def get_architecture(request: Request) -> Response:
    catalog = services_of(request).catalog
    arch = catalog.architectures.get(request.path_params["name"])
    if arch is None:
        return error_response(f"unknown architecture '{request.path_params['name']}'", 404)
    variants = [v.model_dump() for v in catalog.by_arch.get(arch.name, [])]
    return json_response({**arch.model_dump(), "variants": variants})


def _field(form, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value != "" else None


async def _file(form, name: str) -> bytes | None:
    value = form.get(name)
    return None if value is None or isinstance(value, str) else await value.read()


async def register(request: Request) -> Response:
    """Register an architecture from a multipart form (fields name, task, model, ...)."""
    services = services_of(request)
    settings = services.settings
    async with services.placement.busy_section():  # reading an upload costs CPU: no measurement meanwhile
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput("registration takes multipart/form-data (fields name, task, model ...)")
        body = await read_body(request, settings.max_management_bytes)
        try:
            form = await Request(request.scope, replay(body)).form(max_files=4, max_fields=20)
        except HTTPException as exc:  # Starlette's parser: missing boundary, too many parts ...
            raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
        try:
            model = form.get("model")
            if model is None or isinstance(model, str):
                raise InvalidInput("multipart field 'model' (an ONNX file) is required")
            name, task = _field(form, "name"), _field(form, "task")
            if not name or not task:
                raise InvalidInput("fields 'name' and 'task' are required")
            try:
                accuracy = float(_field(form, "accuracy")) if _field(form, "accuracy") else None
                max_batch = int(_field(form, "max_batch") or settings.default_max_batch)
            except ValueError as exc:
                raise InvalidInput(f"bad number: {exc}") from None
            arch, variant = await services.registration.register(
                name=name,
                task=task,
                model=await model.read(),
                framework=_field(form, "framework") or "onnx",
                accuracy=accuracy,
                description=_field(form, "description") or "",
                max_batch=max_batch,
                metric=_field(form, "metric"),
                validation=await _file(form, "validation"),
                calibration=await _file(form, "calibration"),
                program=await _file(form, "program"),
            )
        finally:
            await form.close()
    return json_response({"architecture": arch.model_dump(), "variants": [variant.model_dump()]}, 201)


async def delete_architecture(request: Request) -> Response:
    await services_of(request).registration.remove(request.path_params["name"])
    return Response(status_code=204)


async def start_profile(request: Request) -> Response:
    body = await read_body(request, 1 << 16)
    try:
        opts = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise InvalidInput('body must be JSON, e.g. {"quick": true}') from None
    if not isinstance(opts, dict):
        raise InvalidInput('body must be a JSON object, e.g. {"quick": true}')
    state = services_of(request).profiling.start(request.path_params["name"], quick=parse_bool(opts, "quick", False))
    return json_response(state, 202)


async def get_profile(request: Request) -> Response:
    services = services_of(request)
    name = request.path_params["name"]
    if name not in services.catalog.architectures:
        return error_response(f"unknown architecture '{name}'", 404)
    state = services.profiling.states.get(name)
    if state is None:
        return error_response(f"architecture '{name}' has not been profiled since the server started", 404)
    return json_response(state)


def _variant_row(request: Request, v) -> dict:
    services = services_of(request)
    prof = services.catalog.profiles.get(v.name)
    return {
        **v.model_dump(mode="json"),
        "runtime": runtime_of(v.format)[0],
        "loaded_on": [w.name for w in services.cluster.workers if w.hosts(v.name)],
        "profile": None if prof is None else prof.model_dump(mode="json"),
    }


async def list_variants(request: Request) -> Response:
    arch = request.query_params.get("architecture")
    variants = services_of(request).catalog.variants.values()
    return json_response([_variant_row(request, v) for v in variants if arch is None or v.architecture == arch])


async def get_variant(request: Request) -> Response:
    v = services_of(request).catalog.variants.get(request.path_params["name"])
    if v is None:
        return error_response(f"unknown variant '{request.path_params['name']}'", 404)
    return json_response(_variant_row(request, v))


# ---- workers, decisions, the controller -------------------------------------------------------
async def workers(request: Request) -> Response:
    return json_response(services_of(request).views.workers_info())


async def decisions(request: Request) -> Response:
    """Decisions, oldest first: ``kind`` (comma-separated), ``since`` (Unix time, ISO 8601 or a span
    back such as 10m), ``limit`` (the newest N, 100 by default)."""
    q = request.query_params
    raw = q.get("limit", "100")
    if not raw.isdigit() or not 0 < int(raw) <= 100_000:
        return error_response(f"limit must be an integer from 1 to 100000, got {raw!r}", 400)
    try:
        kinds = parse_kinds(q["kind"]) if "kind" in q else None
        since = parse_since(q["since"]) if "since" in q else None
    except ValueError as exc:
        return error_response(str(exc), 400)
    return json_response(services_of(request).decisions.query(kinds, since, int(raw)))


async def autoscale(request: Request) -> Response:
    scaler = services_of(request).autoscaler
    return json_response(scaler.report() if scaler is not None else {"enabled": False})


async def frontends(request: Request) -> Response:
    return json_response(await asyncio.to_thread(services_of(request).leadership.report))


# ---- offline jobs ------------------------------------------------------------------------------
def _job_row(job) -> dict:
    return {**job.model_dump(mode="json", exclude={"files"}), "progress": round(job.progress, 4)}


async def submit_job(request: Request) -> Response:
    services = services_of(request)
    limit = services.settings.max_management_bytes
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    opts: dict = dict(request.query_params)
    inputs = None
    if kind == "application/json":
        try:
            opts.update(orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            raise InvalidInput('JSON body must be an object, e.g. {"model": ..., "directory": ...}') from None
    elif body:
        inputs = await asyncio.to_thread(read_npz, body, limit)
    if not isinstance(opts.get("model"), str) or not opts.get("model"):
        raise InvalidInput("'model' (a task, architecture or variant) is required")
    directory = opts.get("directory")
    if directory is not None and not isinstance(directory, str):
        raise InvalidInput("'directory' must be a string")
    min_accuracy = parse_number(opts, "min_accuracy", 0.0, 1.0) if opts.get("min_accuracy") != "" else None
    job = await services.jobs.submit(opts["model"], inputs=inputs, directory=directory, min_accuracy=min_accuracy)
    return json_response(_job_row(job), 201)


async def list_jobs(request: Request) -> Response:
    return json_response([_job_row(j) for j in services_of(request).jobs.list()])


async def get_job(request: Request) -> Response:
    return json_response(_job_row(services_of(request).jobs.get(request.path_params["id"])))


async def cancel_job(request: Request) -> Response:
    return json_response(_job_row(services_of(request).jobs.cancel(request.path_params["id"])))


async def job_result(request: Request) -> Response:
    path = services_of(request).jobs.result_path(request.path_params["id"])
    return Response(path.read_bytes(), media_type="application/octet-stream")


def management_routes(keys: tuple[str, ...]) -> list[Route]:
    def m(path: str, fn, method: str = "GET") -> Route:
        return Route(path, guard(fn, keys), methods=[method])

    return [
        *dashboard_routes(),
        m("/metrics", metrics),
        Route("/api/v1/openapi.json", guard(openapi)),
        m("/api/v1/tasks", list_tasks),
        m("/api/v1/architectures", list_architectures),
        m("/api/v1/architectures", register, "POST"),
        m("/api/v1/architectures/{name}", get_architecture),
        m("/api/v1/architectures/{name}", delete_architecture, "DELETE"),
        m("/api/v1/architectures/{name}/profile", start_profile, "POST"),
        m("/api/v1/architectures/{name}/profile", get_profile),
        m("/api/v1/variants", list_variants),
        m("/api/v1/variants/{name}", get_variant),
        m("/api/v1/workers", workers),
        m("/api/v1/decisions", decisions),
        m("/api/v1/autoscale", autoscale),
        m("/api/v1/frontends", frontends),
        m("/api/v1/jobs", list_jobs),
        m("/api/v1/jobs", submit_job, "POST"),
        m("/api/v1/jobs/{id}", get_job),
        m("/api/v1/jobs/{id}", cancel_job, "DELETE"),
        m("/api/v1/jobs/{id}/result", job_result),
    ]
