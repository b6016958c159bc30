"""The KServe v2 gRPC transport of the Python client (``infaas infer --url grpc://host:port``).

Inference, health and metadata travel over gRPC; the management API (registration, jobs,
decisions...) is REST-only, so those calls need an ``http://`` URL.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from infaas.client.http import InfaasClientError, InferResult, only_input, with_objectives
from infaas.protocol.codec import tensor_from_bytes, tensor_to_bytes
from infaas.protocol.grpc_codec import SERVICE, params_from_pb, params_to_pb
from infaas.protocol.proto import kserve_v2_pb2 as pb
from infaas.tensors import numpy_to_v2

MAX_MESSAGE = 256 * 2**20  # the client's own limit; the server's comes from its settings

# gRPC status -> the HTTP status REST would have answered with (InfaasClientError carries HTTP codes)
_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.CANCELLED: 499,
}


class GrpcClient:
    def __init__(self, url: str = "grpc://127.0.0.1:8001", timeout: float = 120.0, api_key: str | None = None) -> None:
        self.url = url
        self.target = url.removeprefix("grpc://")
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._channel = grpc.insecure_channel(
            self.target,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        self._signatures: dict[str, dict] = {}
        self._stubs: dict[str, Any] = {}  # method -> its callable on the channel (made once)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, response_type):
        rpc = self._stubs.get(method)
        if rpc is None:
            rpc = self._stubs[method] = self._channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
        try:
            return rpc(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                raise InfaasClientError(0, f"cannot reach infaas at {self.url}: {exc.details()}") from None
            trailer = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
            raise InfaasClientError(
                _HTTP.get(code, 500),
                exc.details() or str(code),
                int(trailer) / 1000 if trailer and trailer.isdigit() else None,
            ) from None

    # ---- health and metadata ---------------------------------------------------------------------
    def live(self) -> bool:
        try:
            return self._call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        except InfaasClientError:
            return False

    def ready(self) -> bool:
        return self._call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready

    def model_ready(self, model: str, version: str | None = None) -> bool:
        req = pb.ModelReadyRequest(name=model, version=version or "")
        return self._call("ModelReady", req, pb.ModelReadyResponse).ready

    def server_metadata(self) -> dict:
        r = self._call("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
        return {"name": r.name, "version": r.version, "extensions": list(r.extensions)}

    def model_metadata(self, model: str, version: str | None = None) -> dict:
        r = self._call(
            "ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""), pb.ModelMetadataResponse
        )

        def tensors(ts):
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]

        return {
            "name": r.name,
            "versions": list(r.versions),
            "platform": r.platform,
            "inputs": tensors(r.inputs),
            "outputs": tensors(r.outputs),
        }

    # ---- inference ---------------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | np.ndarray,
        *,
        version: str | None = None,
        parameters: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        binary: bool = True,
        request_id: str | None = None,
        latency_ms: float | None = None,
        min_accuracy: float | None = None,
        max_cost: float | None = None,
    ) -> InferResult:
        """As :meth:`infaas.client.Client.infer`; tensors always travel as raw bytes (``binary`` is ignored)."""
        if isinstance(inputs, np.ndarray):
            meta = self._signatures.get(model) or self.model_metadata(model)
            self._signatures[model] = meta
            inputs = only_input(model, meta, inputs)
        req = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id or "")
        params_to_pb(req.parameters, with_objectives(parameters, latency_ms, min_accuracy, max_cost))
        for name, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            datatype = numpy_to_v2(arr.dtype)
            req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            req.raw_input_contents.append(tensor_to_bytes(arr, datatype))
        for name in outputs or []:
            req.outputs.add(name=name)
        resp = self._call("ModelInfer", req, pb.ModelInferResponse)
        arrays = {}
        for i, out in enumerate(resp.outputs):
            arr = tensor_from_bytes(resp.raw_output_contents[i], out.datatype, tuple(out.shape), out.name)
            arrays[out.name] = arr.copy()  # writable, independent of the message buffer
        return InferResult(
            resp.model_name, resp.model_version, arrays, params_from_pb(resp.parameters), resp.id or None
        )


def connect(url: str, timeout: float = 120.0, api_key: str | None = None):
    """A client for ``http://`` (REST: everything) or ``grpc://`` (inference, health, metadata) URLs."""
    if url.startswith("grpc://"):
        return GrpcClient(url, timeout, api_key)
    from infaas.client.http import Client

    return Client(url, timeout, api_key)
