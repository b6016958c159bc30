"""KServe v2 REST (with Triton's binary, statistics and configuration extensions) and the
management API. Routes only convert wire types and call the data plane."""

from __future__ import annotations

import contextlib
import io
import logging
import zlib
from collections.abc import Awaitable, Callable

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas.errors import InfaasError, InvalidInput
from infaas.frontend import codec
from infaas.frontend.dataplane import DataPlane
from infaas.frontend.openapi import openapi_schema

log = logging.getLogger("infaas.rest")


def _json(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status,
                    media_type="application/json")  # fmt: skip


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Every infaas error becomes a v2 error body with its status; anything else a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except InfaasError as exc:
            return _error(exc.message, exc.status)
        except Exception as exc:  # the server keeps serving
            log.exception("unhandled error on %s", request.url.path)
            return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    return wrapped


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        try:
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        except zlib.error as exc:
            raise InvalidInput(f"body is not valid {encoding}: {exc}") from None
    elif encoding not in ("", "identity"):
        raise InvalidInput(f"unsupported content-encoding {encoding!r}")
    return body


class _TooLarge(InfaasError):
    status = 413


def build_app(dp: DataPlane, lifespan=None) -> Starlette:
    settings = dp.settings

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
        req = codec.decode_request(body, request.headers.get(codec.HEADER_LENGTH), model, version,
                                   settings.max_request_elements)  # fmt: skip
        resp = await dp.infer(req)
        content, headers = codec.encode_response(resp)
        return Response(content, 200, headers=headers)

    async def repository_index(request: Request) -> Response:
        body = await request.body()
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                opts = orjson.loads(body)
                if isinstance(opts, dict) and opts.get("ready"):
                    return _json([r for r in dp.repository_index() if r["state"] == "READY"])
        return _json(dp.repository_index())

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
        form = await request.form(max_files=3, max_fields=20)
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
                accuracy=accuracy, description=field("description") or "", max_batch=max_batch,
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
        body = await request.body()
        try:
            opts = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise InvalidInput("body must be JSON, e.g. {\"quick\": true}") from None
        state = dp.start_profiling(request.path_params["name"], quick=bool(isinstance(opts, dict) and opts.get("quick")))
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
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return _error("limit must be an integer", 400)
        return _json(list(dp.decisions)[-limit:])

    async def autoscale(request: Request) -> Response:
        scaler = dp.autoscaler
        return _json(scaler.report() if scaler is not None else {"enabled": False})

    async def submit_job(request: Request) -> Response:
        q = request.query_params
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        opts: dict = dict(q)
        inputs = None
        if kind == "application/json":
            try:
                opts.update(orjson.loads(body))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                raise InvalidInput("JSON body must be an object, e.g. {\"model\": ..., \"directory\": ...}") from None
        elif body:
            try:
                with np.load(io.BytesIO(body), allow_pickle=False) as npz:
                    inputs = {k: npz[k] for k in npz.files}
            except Exception as exc:
                raise InvalidInput(f"body is not a readable .npz: {exc}") from None
        if not opts.get("model"):
            raise InvalidInput("'model' (a task, architecture or variant) is required")
        try:
            acc = opts.get("min_accuracy")
            min_accuracy = None if acc in (None, "") else float(acc)
        except (TypeError, ValueError):
            raise InvalidInput(f"min_accuracy must be a number, got {opts.get('min_accuracy')!r}") from None
        job = dp.jobs.submit(opts["model"], inputs=inputs, directory=opts.get("directory"),
                             min_accuracy=min_accuracy)  # fmt: skip
        return _json(_job_row(job), 201)

    async def list_jobs(request: Request) -> Response:
        return _json([_job_row(j) for j in dp.jobs.list()])

    async def get_job(request: Request) -> Response:
        return _json(_job_row(dp.jobs.get(request.path_params["id"])))

    async def cancel_job(request: Request) -> Response:
        return _json(_job_row(dp.jobs.cancel(request.path_params["id"])))

    async def job_result(request: Request) -> Response:
        path = dp.jobs.result_path(request.path_params["id"])
        return Response(path.read_bytes(), media_type="application/octet-stream")

    async def openapi(request: Request) -> Response:
        return _json(openapi_schema())

    g = _guard
    base = "/v2/models/{model}"
    ver = base + "/versions/{version}"
    # the inference routes come first: Starlette tries routes in order
    routes = [Route(prefix + "/infer", g(infer), methods=["POST"]) for prefix in (base, ver)]
    routes += [
        Route("/v2/health/live", g(live)),
        Route("/v2/health/ready", g(ready)),
        Route("/v2", g(server_metadata)),
        Route("/v2/models/stats", g(model_stats)),
        Route("/v2/repository/index", g(repository_index), methods=["POST"]),
        Route("/metrics", g(metrics)),
        Route("/api/v1/openapi.json", g(openapi)),
        Route("/api/v1/tasks", g(list_tasks)),
        Route("/api/v1/architectures", g(list_architectures)),
        Route("/api/v1/architectures", g(register), methods=["POST"]),
        Route("/api/v1/architectures/{name}", g(get_architecture)),
        Route("/api/v1/architectures/{name}", g(delete_architecture), methods=["DELETE"]),
        Route("/api/v1/architectures/{name}/profile", g(start_profile), methods=["POST"]),
        Route("/api/v1/architectures/{name}/profile", g(get_profile)),
        Route("/api/v1/variants", g(list_variants)),
        Route("/api/v1/variants/{name}", g(get_variant)),
        Route("/api/v1/workers", g(workers)),
        Route("/api/v1/decisions", g(decisions)),
        Route("/api/v1/autoscale", g(autoscale)),
        Route("/api/v1/jobs", g(list_jobs)),
        Route("/api/v1/jobs", g(submit_job), methods=["POST"]),
        Route("/api/v1/jobs/{id}", g(get_job)),
        Route("/api/v1/jobs/{id}", g(cancel_job), methods=["DELETE"]),
        Route("/api/v1/jobs/{id}/result", g(job_result)),
    ]
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
