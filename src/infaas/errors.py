"""Errors with the HTTP / gRPC status they map to (as Triton maps them)."""

from __future__ import annotations


class InfaasError(Exception):
    """Base error; ``status`` is the HTTP status code the frontends send."""

    status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InfaasError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(InfaasError):
    status = 404
    grpc_code = "NOT_FOUND"


class AlreadyExists(InfaasError):
    status = 409
    grpc_code = "ALREADY_EXISTS"


class Unavailable(InfaasError):
    """The model or worker cannot serve now (not loaded, crashed, overloaded, deadline missed)."""

    status = 503
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(Unavailable):
    """The request could not meet its deadline; it was dropped rather than served late."""

    grpc_code = "DEADLINE_EXCEEDED"


class WorkerCrashed(Unavailable):
    pass


class RuntimeContractError(InfaasError):
    """A runtime broke its contract (e.g. returned a different number of rows)."""
