"""Python SDK for infaas (the CLI uses it; tritonclient works too)."""

from infaas.client.http import Client, InfaasClientError, InferResult, decode_response

__all__ = ["Client", "InfaasClientError", "InferResult", "decode_response"]
