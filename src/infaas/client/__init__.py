"""Python SDK for infaas (the CLI uses it; tritonclient works too).

``Client`` speaks REST (inference and the management API); ``GrpcClient`` speaks KServe v2 gRPC
(inference, health, metadata); ``connect(url)`` picks one from the URL's scheme.
"""

from infaas.client.grpc_client import GrpcClient, connect
from infaas.client.http import Client, InfaasClientError, InferResult, decode_response

__all__ = ["Client", "GrpcClient", "InfaasClientError", "InferResult", "connect", "decode_response"]
