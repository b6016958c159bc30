"""The KServe v2 wire protocol, shared by the server's doors and the client SDK: REST codec
(JSON + Triton's binary extension), gRPC codec and generated messages, request parameters, and
the protocol-agnostic request / response types. Nothing here imports server code."""

from infaas.protocol.params import RequestParams, parse_request_params
from infaas.protocol.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "RequestParams",
    "RequestedOutput",
    "parse_request_params",
]
