"""OpenAPI 3.0 schema of the REST surface: KServe v2 endpoints and the /api/v1 management API."""

from __future__ import annotations

from functools import cache

from infaas import __version__

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(
    summary: str,
    tag: str,
    ok: str = "200",
    body: dict | None = None,
    params: list | None = None,
    schema: dict | None = None,
) -> dict:
    ok_resp: dict = {"description": "success"}
    if schema is not None:
        ok_resp["content"] = {"application/json": {"schema": schema}}
    # every operation may also answer: 401 (API key), 413 (a body past its limit), 429 (shed at
    # admission, Retry-After), 499 (the client went away), 503 (unavailable, Retry-After)
    op: dict = {
        "summary": summary,
        "tags": [tag],
        "responses": {
            ok: ok_resp,
            **{code: _ERROR for code in ("400", "401", "404", "409", "413", "429", "499", "503")},
        },
    }
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, desc: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


def _query_param(name: str, desc: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": {"type": "string"}}


@cache
def openapi_schema() -> dict:
    model = _path_param("model", "a task (model-less), an architecture, or a variant")
    version = _path_param("version", "a variant of the architecture (full or short name)")
    obj = {"type": "object"}
    infer_body = {
        "required": True,
        "description": "JSON, or (binary tensor extension) a JSON header of "
        "Inference-Header-Content-Length bytes followed by the binary tensors",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    paths: dict = {
        "/v2/health/live": {"get": _op("Server liveness", "health")},
        "/v2/health/ready": {"get": _op("Server readiness", "health")},
        "/v2": {"get": _op("Server metadata", "metadata", schema=obj)},
        "/v2/models/stats": {"get": _op("Statistics of every variant", "statistics", schema=obj)},
        "/v2/repository/index": {
            "post": _op(
                "Repository index: tasks and variants with state", "repository", schema={"type": "array", "items": obj}
            )
        },
        "/v2/repository/models/{model}/load": {
            "post": _op(
                "Load a variant (or an architecture's default variant) on parameters.replicas workers (default 1)",
                "repository",
                params=[_path_param("model", "a variant or an architecture")],
                schema=obj,
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"replicas": {"type": "integer", "minimum": 1}},
                                    }
                                },
                            }
                        }
                    },
                },
            )
        },
        "/v2/repository/models/{model}/unload": {
            "post": _op(
                "Unload a variant from every worker (requests sent to it drain)",
                "repository",
                params=[_path_param("model", "a variant")],
                schema=obj,
            )
        },
        **_shared_memory_paths(obj),
        "/metrics": {"get": _op("Prometheus metrics", "metrics")},
        "/api/v1/openapi.json": {"get": _op("This schema", "management", schema=obj)},
        "/dashboard": {"get": _op("The web dashboard (HTML; its figures come from this API)", "management")},
        "/dashboard/{name}": {
            "get": _op(
                "The dashboard's own files (app.js, style.css)",
                "management",
                params=[_path_param("name", "app.js or style.css")],
            )
        },
        "/api/v1/tasks": {"get": _op("List tasks", "management", schema={"type": "array", "items": obj})},
        "/api/v1/architectures": {
            "get": _op(
                "List architectures",
                "management",
                params=[_query_param("task", "only this task")],
                schema={"type": "array", "items": {"$ref": "#/components/schemas/Architecture"}},
            ),
            "post": _op(
                "Register an ONNX model for a task",
                "management",
                ok="201",
                schema=obj,
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["name", "task", "model"],
                                "properties": {
                                    "name": {"type": "string", "description": "architecture name"},
                                    "task": {"type": "string"},
                                    "model": {"type": "string", "format": "binary", "description": "ONNX file"},
                                    "validation": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": ".npz with 'inputs' and 'labels'; accuracy is measured",
                                    },
                                    "calibration": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": ".npz with 'inputs' for INT8 calibration (no labels)",
                                    },
                                    "program": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": "the same model as a torch.export program (.pt2): "
                                        "PyTorch's variants",
                                    },
                                    "accuracy": {"type": "number", "description": "declared top-1 accuracy (0..1)"},
                                    "framework": {"type": "string"},
                                    "description": {"type": "string"},
                                    "max_batch": {"type": "integer"},
                                    "metric": {
                                        "type": "string",
                                        "enum": ["top1", "cosine", "rel-l2"],
                                        "description": "the task's quality metric (a new task; default from outputs)",
                                    },
                                },
                            }
                        }
                    },
                },
            ),
        },
        "/api/v1/architectures/{name}": {
            "get": _op(
                "An architecture and its variants",
                "management",
                schema=obj,
                params=[_path_param("name", "architecture")],
            ),
            "delete": _op(
                "Remove an architecture and its variants",
                "management",
                ok="204",
                params=[_path_param("name", "architecture")],
            ),
        },
        "/api/v1/architectures/{name}/profile": {
            "post": _op(
                "Generate and profile the architecture's variants (in the background)",
                "management",
                ok="202",
                schema=obj,
                params=[_path_param("name", "architecture")],
                body={
                    "required": False,
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"quick": {"type": "boolean"}}}}
                    },
                },
            ),
            "get": _op(
                "Progress of the architecture's profiling",
                "management",
                schema=obj,
                params=[_path_param("name", "architecture")],
            ),
        },
        "/api/v1/variants": {
            "get": _op(
                "List variants",
                "management",
                schema={"type": "array", "items": obj},
                params=[_query_param("architecture", "only this architecture")],
            )
        },
        "/api/v1/variants/{name}": {
            "get": _op("A variant", "management", schema=obj, params=[_path_param("name", "variant")])
        },
        "/api/v1/workers": {
            "get": _op("Workers, their cores and loaded variants", "management", schema={"type": "array", "items": obj})
        },
        "/api/v1/decisions": {
            "get": _op(
                "Decisions with their reasons, oldest first: control decisions (kept apart from query "
                "traffic) and sampled per-query selections (`similar`: like ones not kept that second)",
                "management",
                schema={"type": "array", "items": obj},
                params=[
                    _query_param("kind", "only these kinds, comma-separated (load, add_worker, select, ...)"),
                    _query_param("since", "only at or after: a Unix time, ISO 8601, or a span back (10m, 2h)"),
                    _query_param("limit", "the newest N (1-100000, default 100)"),
                ],
            )
        },
        "/api/v1/frontends": {
            "get": _op(
                "The frontends serving this deployment, which one holds the controller lease, and its fencing token",
                "management",
                schema=obj,
            )
        },
        "/api/v1/autoscale": {
            "get": _op(
                "The autoscaler: limits, workers' CPU and memory, each variant's state", "management", schema=obj
            )
        },
        "/api/v1/jobs": {
            "get": _op("List offline jobs", "jobs", schema={"type": "array", "items": obj}),
            "post": _op(
                "Submit an offline job",
                "jobs",
                ok="201",
                schema=obj,
                params=[
                    _query_param("model", "a task, architecture or variant"),
                    _query_param("min_accuracy", "lowest accuracy of the variants that may serve it"),
                ],
                body={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": ".npz of the inputs, by input name",
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model", "directory"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "min_accuracy": {"type": "number"},
                                    "directory": {
                                        "type": "string",
                                        "description": "a directory of images on the server",
                                    },
                                },
                            }
                        },
                    },
                },
            ),
        },
        "/api/v1/jobs/{id}": {
            "get": _op("A job's status and progress", "jobs", schema=obj, params=[_path_param("id", "job")]),
            "delete": _op("Cancel a job", "jobs", schema=obj, params=[_path_param("id", "job")]),
        },
        "/api/v1/jobs/{id}/result": {
            "get": _op("A finished job's outputs (.npz)", "jobs", params=[_path_param("id", "job")])
        },
    }
    for prefix, params in (
        ("/v2/models/{model}", [model]),
        ("/v2/models/{model}/versions/{version}", [model, version]),
    ):
        paths[prefix] = {"get": _op("Model metadata", "metadata", params=params, schema=obj)}
        paths[prefix + "/ready"] = {"get": _op("Model readiness", "health", params=params)}
        paths[prefix + "/config"] = {
            "get": _op("Triton-style model configuration", "metadata", params=params, schema=obj)
        }
        paths[prefix + "/stats"] = {"get": _op("Model statistics", "statistics", params=params, schema=obj)}
        paths[prefix + "/infer"] = {
            "post": _op(
                "Inference",
                "inference",
                params=params,
                body=infer_body,
                schema={"$ref": "#/components/schemas/InferResponse"},
            )
        }
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "infaas",
            "version": __version__,
            "description": "KServe v2 inference protocol plus the infaas management API.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Tensor": tensor,
                "InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "InferResponse": {
                    "type": "object",
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                    },
                },
                "Architecture": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "task": {"type": "string"},
                        "accuracy": {"type": "number", "nullable": True},
                        "accuracy_source": {
                            "type": "string",
                            "enum": ["measured", "declared", "estimated", "reference", "unknown"],
                        },
                    },
                },
            }
        },
    }


def _shared_memory_paths(obj: dict) -> dict:
    """Triton's system shared-memory extension (and CUDA's status / unregister, never registered)."""
    region = [_path_param("name", "the region's name")]
    listing = {"type": "array", "items": obj}
    register = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["key", "byte_size"],
                    "properties": {
                        "key": {"type": "string", "description": "the POSIX shared-memory object (/dev/shm)"},
                        "offset": {"type": "integer", "minimum": 0},
                        "byte_size": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
    paths: dict = {}
    for kind, what in (("system", "system"), ("cuda", "CUDA (none: CPU workers)")):
        base = f"/v2/{kind}sharedmemory"
        paths[base + "/status"] = {"get": _op(f"Every {what} shared-memory region", "shared memory", schema=listing)}
        paths[base + "/region/{name}/status"] = {
            "get": _op(f"One {what} shared-memory region", "shared memory", params=region, schema=listing)
        }
        paths[base + "/region/{name}/register"] = {
            "post": _op(f"Register a {what} shared-memory region", "shared memory", params=region, body=register)
        }
        paths[base + "/region/{name}/unregister"] = {
            "post": _op(f"Unregister a {what} shared-memory region", "shared memory", params=region)
        }
        paths[base + "/unregister"] = {"post": _op(f"Unregister every {what} shared-memory region", "shared memory")}
    return paths
