"""KServe v2 REST (with Triton's binary, statistics and configuration extensions) and the
management API. Routes only convert wire types and call the data plane."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas.errors import Cancelled, InfaasError, InvalidInput, TooLarge
from infaas.frontend.auth import authorize
from infaas.frontend.openapi import openapi_schema
from infaas.protocol import codec
from infaas.protocol.params import parse_bool, parse_number

if TYPE_CHECKING:
    from infaas.frontend.dataplane import DataPlane
    from infaas.frontend.server import Services

log = logging.getLogger("infaas.rest")


def _json(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status,
                    media_type="application/json")  # fmt: skip


def _error(message: str, status: int, retry_after_s: float | None = None) -> Response:
    response = _json({"error": message}, status)
    if retry_after_s is not None:  # whole seconds (RFC 9110), at least 1
        response.headers["retry-after"] = str(max(1, math.ceil(retry_after_s)))
    return response


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler, keys: tuple[str, ...] = ()) -> Handler:
    """Checks the bearer token when ``keys`` are set; every infaas error becomes a v2 error body with
    its status (and Retry-After when it has one); anything else a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            if keys:
                authorize(request.headers.get("authorization", ""), keys)
            return await fn(request)
        except InfaasError as exc:
            return _error(exc.message, exc.status, exc.retry_after_s)
        except Exception as exc:  # the server keeps serving
            log.exception("unhandled error on %s", request.url.path)
            return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    return wrapped


async def _body(request: Request, limit: int) -> bytes:
    """The body, read within ``limit`` bytes, decompressed (gzip / deflate) within ``limit`` too,
    as the chunks arrive: a compression bomb stops at the limit, never past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if encoding not in ("", "identity", "gzip", "deflate"):
        raise InvalidInput(f"unsupported content-encoding {encoding!r}")
    inflate = None
    if encoding in ("gzip", "deflate"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    chunks, size, raw = [], 0, 0
    try:
        async for chunk in request.stream():
            raw += len(chunk)
            if raw > limit:
                raise TooLarge(f"request body exceeds the limit of {limit} bytes")
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - size)
                if inflate.unconsumed_tail:
                    raise TooLarge(f"{encoding} body inflates past the limit of {limit} bytes")
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"request body exceeds the limit of {limit} bytes"
                               + (" once decompressed" if inflate is not None else ""))  # fmt: skip
            chunks.append(chunk)
        if inflate is not None:
            tail = inflate.flush()
            if size + len(tail) > limit:
                raise TooLarge(f"{encoding} body inflates past the limit of {limit} bytes")
            chunks.append(tail)
            if not inflate.eof:
                raise InvalidInput(f"body is not valid {encoding}: the stream is truncated")
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding}: {exc}") from None
    return b"".join(chunks)


def _replay(body: bytes):
    """An ASGI receive callable that hands out an already-read body (for Starlette's form parser)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no more messages: as a client that waits
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def read_npz(body: bytes, limit: int) -> dict[str, np.ndarray]:
    """Arrays of an .npz body, refusing members whose declared uncompressed sizes exceed ``limit``
    in all (zipfile never inflates a member past its declared size) and anything pickled."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > limit:
            raise TooLarge(f".npz members inflate to {total} bytes, over the limit of {limit}")
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except InfaasError:
        raise
    except Exception as exc:
        raise InvalidInput(f"body is not a readable .npz: {exc}") from None


async def _cancel_on_disconnect(request: Request, task: asyncio.Task) -> bool:
    """Cancel ``task`` when the client goes away (start only once the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return True


def build_app(services: Services, lifespan=None, *, inference: bool = True, management: bool = True) -> Starlette:
    """The REST app: KServe v2 inference routes and / or the management API (/api/v1, /metrics)."""
    dp, settings, jobs = services.dataplane, services.settings, services.jobs

    def model_args(request: Request) -> tuple[str, str | None]:
        p = request.path_params
        return p["model"], p.get("version")

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if dp.ready else 400)

    async def server_metadata(request: Request) -> Response:
        return _json(dp.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return _json(dp.model_metadata(*model_args(request)))

    async def model_ready(request: Request) -> Response:
        return Response(status_code=200 if dp.model_ready(*model_args(request)) else 400)

    async def model_config(request: Request) -> Response:
        return _json(dp.model_config(*model_args(request)))

    async def model_stats(request: Request) -> Response:
        p = request.path_params
        return _json(dp.model_stats(p.get("model"), p.get("version")))

    async def infer(request: Request) -> Response:
        model, version = model_args(request)
        dp.catalog.resolve(model, version)  # an unknown model is a 404 whatever the body
        body = await _body(request, settings.max_request_bytes)
        header = request.headers.get(codec.HEADER_LENGTH)
        if len(body) > 1 << 20:  # a large JSON header is parsed off the event loop
            req = await asyncio.to_thread(codec.decode_request, body, header, model, version,
                                          settings.max_request_elements)  # fmt: skip
        else:
            req = codec.decode_request(body, header, model, version, settings.max_request_elements)
        # a client that disconnects cancels its request (in the worker too, if still queued)
        task = asyncio.current_task()
        assert task is not None
        gone = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request, task))
        try:
            resp = await dp.infer(req)
        except asyncio.CancelledError:
            if not gone.done() or gone.cancelled() or not gone.result():
                raise  # the server is stopping
            task.uncancel()
            raise Cancelled("the client disconnected; its request was cancelled") from None
        finally:
            gone.cancel()
        content, headers = codec.encode_response(resp)
        return Response(content, 200, headers=headers)

    async def repository_index(request: Request) -> Response:
        body = await _body(request, 1 << 16)
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                opts = orjson.loads(body)
                if isinstance(opts, dict) and opts.get("ready"):
                    return _json([r for r in dp.repository_index() if r["state"] == "READY"])
        return _json(dp.repository_index())

    async def repository_load(request: Request) -> Response:
        """Triton's repository extension: load a variant (or an architecture's default) on
        ``parameters.replicas`` workers (default 1)."""
        body = await _body(request, 1 << 16)
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
        workers = await dp.place(request.path_params["model"], replicas)
        return _json({"model": request.path_params["model"], "workers": workers})

    async def repository_unload(request: Request) -> Response:
        workers = await dp.unplace(request.path_params["model"])
        return _json({"model": request.path_params["model"], "workers": workers})

    async def metrics(request: Request) -> Response:
        return Response(dp.metrics.exposition(), media_type="text/plain; version=0.0.4")

    # ---- management API (/api/v1) ---------------------------------------------------------
    async def list_tasks(request: Request) -> Response:
        return _json([t.model_dump() for t in dp.catalog.tasks.values()])

    async def list_architectures(request: Request) -> Response:
        task = request.query_params.get("task")
        return _json([a.model_dump() for a in dp.catalog.architectures.values()
                      if task is None or a.task == task])  # fmt: skip

    async def get_architecture(request: Request) -> Response:
        arch = dp.catalog.architectures.get(request.path_params["name"])
        if arch is None:
            return _error(f"unknown architecture '{request.path_params['name']}'", 404)
        return _json({**arch.model_dump(), "variants": [
            v.model_dump() for v in dp.catalog.by_arch.get(arch.name, [])]})  # fmt: skip

    async def register(request: Request) -> Response:
        async with dp.busy_section():  # reading an upload costs CPU for seconds: no measurement meanwhile
            return await _register(request)

    async def _register(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput("registration takes multipart/form-data (fields name, task, model ...)")
        body = await _body(request, settings.max_management_bytes)
        try:
            form = await Request(request.scope, _replay(body)).form(max_files=3, max_fields=20)
        except HTTPException as exc:  # Starlette's parser: missing boundary, too many parts ...
            raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
        try:
            def field(name: str) -> str | None:
                value = form.get(name)
                return value if isinstance(value, str) and value != "" else None

            model = form.get("model")
            if model is None or isinstance(model, str):
                raise InvalidInput("multipart field 'model' (an ONNX file) is required")
            name, task = field("name"), field("task")
            if not name or not task:
                raise InvalidInput("fields 'name' and 'task' are required")
            validation = form.get("validation")
            calibration = form.get("calibration")
            try:
                accuracy = float(field("accuracy")) if field("accuracy") else None
                max_batch = int(field("max_batch")) if field("max_batch") else settings.default_max_batch
            except ValueError as exc:
                raise InvalidInput(f"bad number: {exc}") from None
            arch, variant = await dp.register(
                name=name, task=task, model=await model.read(), framework=field("framework") or "onnx",
                accuracy=accuracy, description=field("description") or "", max_batch=max_batch, metric=field("metric"),
                validation=None if validation is None or isinstance(validation, str) else await validation.read(),
                calibration=None if calibration is None or isinstance(calibration, str) else await calibration.read(),
            )  # fmt: skip
        finally:
            await form.close()
        return _json({"architecture": arch.model_dump(), "variants": [variant.model_dump()]}, 201)

    async def delete_architecture(request: Request) -> Response:
        await dp.remove(request.path_params["name"])
        return Response(status_code=204)

    async def start_profile(request: Request) -> Response:
        body = await _body(request, 1 << 16)
        try:
            opts = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise InvalidInput("body must be JSON, e.g. {\"quick\": true}") from None
        if not isinstance(opts, dict):
            raise InvalidInput("body must be a JSON object, e.g. {\"quick\": true}")
        state = dp.start_profiling(request.path_params["name"], quick=parse_bool(opts, "quick", False))
        return _json(state, 202)

    async def get_profile(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in dp.catalog.architectures:
            return _error(f"unknown architecture '{name}'", 404)
        state = dp.profiling.get(name)
        if state is None:
            return _error(f"architecture '{name}' has not been profiled since the server started", 404)
        return _json(state)

    async def list_variants(request: Request) -> Response:
        arch = request.query_params.get("architecture")
        return _json([_variant_row(dp, v) for v in dp.catalog.variants.values()
                      if arch is None or v.architecture == arch])  # fmt: skip

    async def get_variant(request: Request) -> Response:
        v = dp.catalog.variants.get(request.path_params["name"])
        if v is None:
            return _error(f"unknown variant '{request.path_params['name']}'", 404)
        return _json(_variant_row(dp, v))

    async def workers(request: Request) -> Response:
        return _json(dp.workers_info())

    async def decisions(request: Request) -> Response:
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 0 < int(raw) <= 100_000:
            return _error("limit must be an integer from 1 to 100000", 400)
        return _json(list(dp.decisions)[-int(raw):])

    async def autoscale(request: Request) -> Response:
        scaler = services.autoscaler
        return _json(scaler.report() if scaler is not None else {"enabled": False})

    async def frontends(request: Request) -> Response:
        return _json(await asyncio.to_thread(services.leadership.report))

    async def submit_job(request: Request) -> Response:
        q = request.query_params
        body = await _body(request, settings.max_management_bytes)
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        opts: dict = dict(q)
        inputs = None
        if kind == "application/json":
            try:
                opts.update(orjson.loads(body))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                raise InvalidInput("JSON body must be an object, e.g. {\"model\": ..., \"directory\": ...}") from None
        elif body:
            inputs = await asyncio.to_thread(read_npz, body, settings.max_management_bytes)
        if not isinstance(opts.get("model"), str) or not opts.get("model"):
            raise InvalidInput("'model' (a task, architecture or variant) is required")
        directory = opts.get("directory")
        if directory is not None and not isinstance(directory, str):
            raise InvalidInput("'directory' must be a string")
        min_accuracy = parse_number(opts, "min_accuracy", 0.0, 1.0) if opts.get("min_accuracy") != "" else None
        job = jobs.submit(opts["model"], inputs=inputs, directory=directory, min_accuracy=min_accuracy)
        return _json(_job_row(job), 201)

    async def list_jobs(request: Request) -> Response:
        return _json([_job_row(j) for j in jobs.list()])

    async def get_job(request: Request) -> Response:
        return _json(_job_row(jobs.get(request.path_params["id"])))

    async def cancel_job(request: Request) -> Response:
        return _json(_job_row(jobs.cancel(request.path_params["id"])))

    async def job_result(request: Request) -> Response:
        path = jobs.result_path(request.path_params["id"])
        return Response(path.read_bytes(), media_type="application/octet-stream")

    async def openapi(request: Request) -> Response:
        return _json(openapi_schema())

    inference_keys = tuple(settings.api_keys)
    management_keys = tuple(settings.management_api_keys or settings.api_keys)

    def g(fn: Handler) -> Handler:
        return _guard(fn, inference_keys)

    def m(fn: Handler) -> Handler:
        return _guard(fn, management_keys)

    base = "/v2/models/{model}"
    ver = base + "/versions/{version}"
    routes: list[Route] = []
    if inference:  # the inference routes come first: Starlette tries routes in order
        routes += [Route(prefix + "/infer", g(infer), methods=["POST"]) for prefix in (base, ver)]
        routes += [
            Route("/v2/health/live", _guard(live)),  # probes need no key
            Route("/v2/health/ready", _guard(ready)),
            Route("/v2", g(server_metadata)),
            Route("/v2/models/stats", g(model_stats)),
            Route("/v2/repository/index", g(repository_index), methods=["POST"]),
            Route("/v2/repository/models/{model}/load", m(repository_load), methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", m(repository_unload), methods=["POST"]),
        ]
    if management:
        routes += [
            Route("/metrics", m(metrics)),
            Route("/api/v1/openapi.json", _guard(openapi)),
            Route("/api/v1/tasks", m(list_tasks)),
            Route("/api/v1/architectures", m(list_architectures)),
            Route("/api/v1/architectures", m(register), methods=["POST"]),
            Route("/api/v1/architectures/{name}", m(get_architecture)),
            Route("/api/v1/architectures/{name}", m(delete_architecture), methods=["DELETE"]),
            Route("/api/v1/architectures/{name}/profile", m(start_profile), methods=["POST"]),
            Route("/api/v1/architectures/{name}/profile", m(get_profile)),
            Route("/api/v1/variants", m(list_variants)),
            Route("/api/v1/variants/{name}", m(get_variant)),
            Route("/api/v1/workers", m(workers)),
            Route("/api/v1/decisions", m(decisions)),
            Route("/api/v1/autoscale", m(autoscale)),
            Route("/api/v1/frontends", m(frontends)),
            Route("/api/v1/jobs", m(list_jobs)),
            Route("/api/v1/jobs", m(submit_job), methods=["POST"]),
            Route("/api/v1/jobs/{id}", m(get_job)),
            Route("/api/v1/jobs/{id}", m(cancel_job), methods=["DELETE"]),
            Route("/api/v1/jobs/{id}/result", m(job_result)),
        ]
        if not inference:
            routes += [Route("/v2/health/live", _guard(live)), Route("/v2/health/ready", _guard(ready))]
    if inference:
        for prefix in (base, ver):
            routes += [
                Route(prefix, g(model_metadata)),
                Route(prefix + "/ready", g(model_ready)),
                Route(prefix + "/config", g(model_config)),
                Route(prefix + "/stats", g(model_stats)),
            ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return _error(f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}", status)

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found})  # fmt: skip


def _variant_row(dp: DataPlane, v) -> dict:
    prof = dp.catalog.profiles.get(v.name)
    return {**v.model_dump(mode="json"), "loaded_on": [w.name for w in dp.cluster.workers if w.hosts(v.name)],
            "profile": None if prof is None else prof.model_dump(mode="json")}  # fmt: skip


def _job_row(job) -> dict:
    return {**job.model_dump(mode="json", exclude={"files"}), "progress": round(job.progress, 4)}
