"""KServe v2 over gRPC (``grpc.aio``): service ``inference.GRPCInferenceService``.

Only wire conversion lives here; every call goes to the same :class:`DataPlane` as REST. Errors
map to gRPC status codes (``InfaasError.grpc_code``) with the same messages as REST's error bodies.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import numpy as np

from infaas.errors import InfaasError, InvalidInput
from infaas.frontend.codec import check_shape, tensor_from_bytes, tensor_to_bytes
from infaas.frontend.dataplane import DataPlane
from infaas.frontend.proto import kserve_v2_pb2 as pb
from infaas.frontend.types import InferInput, InferRequest, InferResponse, RequestedOutput
from infaas.tensors import V2_TO_NUMPY

log = logging.getLogger("infaas.grpc")

SERVICE = "inference.GRPCInferenceService"
MAX_MESSAGE = 256 * 2**20

# datatype -> the InferTensorContents field that carries it
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def params_from_pb(params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def params_to_pb(target, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int | np.integer):
            param.int64_param = int(value)
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        else:
            param.string_param = str(value)


def decode_infer(req: pb.ModelInferRequest, max_elements: int) -> InferRequest:
    """A v2 gRPC ModelInferRequest as the protocol-agnostic request (every field checked)."""
    if not req.inputs:
        raise InvalidInput("request needs at least one input")
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs: send one per input "
                           "(all raw, or all typed contents)")  # fmt: skip
    inputs = []
    for i, tensor in enumerate(req.inputs):
        name, datatype = tensor.name, tensor.datatype
        if not name:
            raise InvalidInput("each input needs a 'name'")
        if datatype not in V2_TO_NUMPY:
            raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
        shape = check_shape(list(tensor.shape), name, max_elements)
        if raw:
            arr = tensor_from_bytes(raw[i], datatype, shape, name)
        else:
            field = CONTENTS.get(datatype)
            if field is None:
                raise InvalidInput(f"input '{name}': {datatype} travels only in raw_input_contents")
            values = getattr(tensor.contents, field)
            count = int(np.prod(shape))
            if len(values) != count:
                raise InvalidInput(f"input '{name}': {len(values)} values in contents, shape {list(shape)} "
                                   f"needs {count}")  # fmt: skip
            if datatype == "BYTES":
                arr = np.empty(count, dtype=object)
                arr[:] = list(values)
                arr = arr.reshape(shape)
            else:
                arr = np.asarray(values, dtype=V2_TO_NUMPY[datatype]).reshape(shape)
        inputs.append(InferInput(name, datatype, shape, arr, params_from_pb(tensor.parameters)))
    outputs = [RequestedOutput(o.name, None, params_from_pb(o.parameters)) for o in req.outputs] or None
    return InferRequest(req.model_name, req.model_version or None, inputs, outputs, req.id or None,
                        params_from_pb(req.parameters))  # fmt: skip


def encode_infer(resp: InferResponse) -> pb.ModelInferResponse:
    """Outputs always travel as raw_output_contents (as Triton answers)."""
    out = pb.ModelInferResponse(model_name=resp.model_name, model_version=resp.model_version, id=resp.id or "")
    params_to_pb(out.parameters, resp.parameters)
    for o in resp.outputs:
        out.outputs.add(name=o.name, datatype=o.datatype, shape=list(o.shape))
        out.raw_output_contents.append(tensor_to_bytes(o.data, o.datatype))
    return out


class GrpcFrontend:
    def __init__(self, dp: DataPlane) -> None:
        self.dp = dp
        self.server: grpc.aio.Server | None = None

    # ---- handlers (each: request message -> response message) --------------------------------
    async def ServerLive(self, req, ctx):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, req, ctx):
        return pb.ServerReadyResponse(ready=self.dp.ready)

    async def ModelReady(self, req, ctx):
        return pb.ModelReadyResponse(ready=self.dp.model_ready(req.name, req.version or None))

    async def ServerMetadata(self, req, ctx):
        return pb.ServerMetadataResponse(**self.dp.server_metadata())

    async def ModelMetadata(self, req, ctx):
        meta = self.dp.model_metadata(req.name, req.version or None)
        out = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for key in ("inputs", "outputs"):
            for t in meta[key]:
                getattr(out, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return out

    async def ModelInfer(self, req, ctx):
        request = decode_infer(req, self.dp.settings.max_request_elements)
        return encode_infer(await self.dp.infer(request))

    async def ModelConfig(self, req, ctx):
        cfg = self.dp.model_config(req.name, req.version or None)
        config = pb.ModelConfig(name=cfg["name"], platform=cfg["platform"], backend=cfg["backend"],
                                max_batch_size=cfg["max_batch_size"])  # fmt: skip
        for t in cfg["input"]:
            config.input.add(name=t["name"], data_type=pb.DataType.Value(t["data_type"]), dims=t["dims"])
        for t in cfg["output"]:
            config.output.add(name=t["name"], data_type=pb.DataType.Value(t["data_type"]), dims=t["dims"])
        for g in cfg["instance_group"]:
            config.instance_group.add(name=g["name"], count=g["count"], kind=pb.ModelInstanceGroup.Kind.Value(g["kind"]))
        config.dynamic_batching.max_queue_delay_microseconds = cfg["dynamic_batching"]["max_queue_delay_microseconds"]
        for key, value in cfg["parameters"].items():
            config.parameters[key].string_value = value["string_value"]
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, req, ctx):
        stats = self.dp.model_stats(req.name or None, req.version or None)
        out = pb.ModelStatisticsResponse()
        for s in stats["model_stats"]:
            m = out.model_stats.add(name=s["name"], version=s["version"], last_inference=s["last_inference"],
                                    inference_count=s["inference_count"], execution_count=s["execution_count"])  # fmt: skip
            for key, d in s["inference_stats"].items():
                getattr(m.inference_stats, key).CopyFrom(pb.StatisticDuration(count=d["count"], ns=d["ns"]))
            for b in s.get("batch_stats", []):
                bs = m.batch_stats.add(batch_size=b["batch_size"])
                for key in ("compute_input", "compute_infer", "compute_output"):
                    getattr(bs, key).CopyFrom(pb.StatisticDuration(count=b[key]["count"], ns=b[key]["ns"]))
        return out

    async def RepositoryIndex(self, req, ctx):
        out = pb.RepositoryIndexResponse()
        for row in self.dp.repository_index():
            if not req.ready or row["state"] == "READY":
                out.models.add(**row)
        return out

    # ---- plumbing ------------------------------------------------------------------------------
    def _wrap(self, method):
        async def call(request, context: grpc.aio.ServicerContext):
            try:
                return await method(request, context)
            except InfaasError as exc:
                await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)
            except Exception as exc:  # a bug must not take the server down: the caller gets INTERNAL
                log.exception("gRPC %s failed", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

        return call

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {}
        for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
                     "ModelConfig", "ModelStatistics", "RepositoryIndex"):  # fmt: skip
            request_type = getattr(pb, f"{name}Request")
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._wrap(getattr(self, name)), request_deserializer=request_type.FromString,
                response_serializer=lambda msg: msg.SerializeToString(),
            )  # fmt: skip
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def start(self, host: str, port: int) -> int:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        self.server = grpc.aio.server(options=options)
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
