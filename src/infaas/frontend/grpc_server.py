"""KServe v2 over gRPC (``grpc.aio``): service ``inference.GRPCInferenceService``.

Only wire conversion lives here; every call goes to the same router and views as REST. Errors
map to gRPC status codes (``InfaasError.grpc_code``) with the same messages as REST's error bodies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

import grpc

from infaas.errors import Cancelled, InfaasError, InvalidInput
from infaas.frontend.auth import authorize
from infaas.frontend.shared_memory import CUDA_UNSUPPORTED
from infaas.protocol.grpc_codec import SERVICE, decode_infer, encode_infer
from infaas.protocol.proto import kserve_v2_pb2 as pb

if TYPE_CHECKING:
    from infaas.app.services import Services

log = logging.getLogger("infaas.grpc")

# Triton's shared-memory methods: guarded by the management keys (a region is a view of the client's memory)
_SHARED_MEMORY = tuple(
    f"{kind}SharedMemory{op}" for kind in ("System", "Cuda") for op in ("Status", "Register", "Unregister")
)

# headroom over max_request_bytes for the message's own framing (names, shapes, parameters)
_ENVELOPE = 1 << 16


class GrpcFrontend:
    def __init__(self, services: Services) -> None:
        self.router = services.router
        self.views = services.views
        self.settings = services.settings
        self.server: grpc.aio.Server | None = None
        self.keys = tuple(self.settings.api_keys)
        self.door = services.doors["grpc"]
        self.regions = services.regions
        self.management_keys = tuple(self.settings.management_api_keys or self.settings.api_keys)

    # ---- handlers (each: request message -> response message) --------------------------------
    async def ServerLive(self, req, ctx):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, req, ctx):
        return pb.ServerReadyResponse(ready=self.router.ready)

    async def ModelReady(self, req, ctx):
        return pb.ModelReadyResponse(ready=self.views.model_ready(req.name, req.version or None))

    async def ServerMetadata(self, req, ctx):
        meta = self.views.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def ModelMetadata(self, req, ctx):
        meta = self.views.model_metadata(req.name, req.version or None)
        out = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for key in ("inputs", "outputs"):
            for t in meta[key]:
                getattr(out, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return out

    async def ModelInfer(self, req, ctx):
        arrival = time.monotonic()
        # refused before decoding when the frontend itself is overloaded
        with self.door.admit(arrival, req.model_name) as passage:
            request = decode_infer(req, self.settings.max_request_elements)
            request.arrival, request.via = arrival, "grpc"
            remaining = ctx.time_remaining()  # the client's gRPC deadline becomes the request's
            if remaining is not None:
                request.deadline = arrival + remaining
            resp = await self.router.infer(request)
            passage.took(resp.parameters)  # the door's throttle learns the worker's queue wait
            return encode_infer(resp)

    async def ModelConfig(self, req, ctx):
        cfg = self.views.model_config(req.name, req.version or None)
        config = pb.ModelConfig(
            name=cfg["name"], platform=cfg["platform"], backend=cfg["backend"], max_batch_size=cfg["max_batch_size"]
        )
        for t in cfg["input"]:
            config.input.add(name=t["name"], data_type=pb.DataType.Value(t["data_type"]), dims=t["dims"])
        for t in cfg["output"]:
            config.output.add(name=t["name"], data_type=pb.DataType.Value(t["data_type"]), dims=t["dims"])
        for g in cfg["instance_group"]:
            config.instance_group.add(
                name=g["name"], count=g["count"], kind=pb.ModelInstanceGroup.Kind.Value(g["kind"])
            )
        config.dynamic_batching.max_queue_delay_microseconds = cfg["dynamic_batching"]["max_queue_delay_microseconds"]
        for key, value in cfg["parameters"].items():
            config.parameters[key].string_value = value["string_value"]
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, req, ctx):
        stats = self.views.model_stats(req.name or None, req.version or None)
        out = pb.ModelStatisticsResponse()
        for s in stats["model_stats"]:
            m = out.model_stats.add(
                name=s["name"],
                version=s["version"],
                last_inference=s["last_inference"],
                inference_count=s["inference_count"],
                execution_count=s["execution_count"],
            )
            for key, d in s["inference_stats"].items():
                getattr(m.inference_stats, key).CopyFrom(pb.StatisticDuration(count=d["count"], ns=d["ns"]))
            for b in s.get("batch_stats", []):
                bs = m.batch_stats.add(batch_size=b["batch_size"])
                for key in ("compute_input", "compute_infer", "compute_output"):
                    getattr(bs, key).CopyFrom(pb.StatisticDuration(count=b[key]["count"], ns=b[key]["ns"]))
        return out

    async def RepositoryIndex(self, req, ctx):
        out = pb.RepositoryIndexResponse()
        for row in self.views.repository_index():
            if not req.ready or row["state"] == "READY":
                out.models.add(**row)
        return out

    # ---- shared memory (Triton's extension; guarded as the management API) ------------------------
    async def SystemSharedMemoryStatus(self, req, ctx):
        out = pb.SystemSharedMemoryStatusResponse()
        for r in self.regions.status(req.name or None):
            out.regions[r["name"]].CopyFrom(out.RegionStatus(**r))
        return out

    async def SystemSharedMemoryRegister(self, req, ctx):
        self.regions.register(req.name, req.key, req.offset, req.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, req, ctx):
        self.regions.unregister(req.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, req, ctx):
        if req.name:
            raise InvalidInput(f"no CUDA shared-memory region named '{req.name}' is registered")
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(self, req, ctx):
        raise InvalidInput(CUDA_UNSUPPORTED)

    async def CudaSharedMemoryUnregister(self, req, ctx):
        return pb.CudaSharedMemoryUnregisterResponse()

    # ---- plumbing ------------------------------------------------------------------------------
    def _wrap(self, method):
        open_method = method.__name__ in ("ServerLive", "ServerReady")  # probes need no key
        keys = self.management_keys if method.__name__ in _SHARED_MEMORY else self.keys

        async def call(request, context: grpc.aio.ServicerContext):
            try:
                if keys and not open_method:  # keys travel as metadata, as REST's header
                    authorize(dict(context.invocation_metadata() or ()).get("authorization", ""), keys)
                return await method(request, context)
            except asyncio.CancelledError:  # the client cancelled or its deadline passed: nothing to answer
                raise
            except Cancelled as exc:
                await context.abort(grpc.StatusCode.CANCELLED, exc.message)
            except InfaasError as exc:
                if exc.retry_after_s is not None:
                    context.set_trailing_metadata((("retry-after-ms", str(math.ceil(exc.retry_after_s * 1000))),))
                await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)
            except Exception as exc:  # a bug must not take the server down: the caller gets INTERNAL
                log.exception("gRPC %s failed", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

        return call

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {}
        for name in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
            *_SHARED_MEMORY,
        ):
            request_type = getattr(pb, f"{name}Request")
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._wrap(getattr(self, name)),
                request_deserializer=request_type.FromString,
                response_serializer=lambda msg: msg.SerializeToString(),
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def start(self, host: str, port: int) -> int:
        settings = self.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_request_bytes + _ENVELOPE),
            ("grpc.max_send_message_length", -1),
        ]
        self.server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.max_connections)
        self.server.add_generic_rpc_handlers((self.handler(),))
        bound = self.server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{port}")
        await self.server.start()
        log.info("gRPC (KServe v2) on %s:%d", host, bound)
        return bound

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            started = time.monotonic()
            await self.server.stop(grace)
            log.info("gRPC stopped in %.2f s", time.monotonic() - started)
