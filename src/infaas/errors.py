"""Errors with the HTTP / gRPC status they map to (as Triton maps them)."""

from __future__ import annotations


class InfaasError(Exception):
    """Base error; ``status`` is the HTTP status code the frontends send."""

    status = 500
    grpc_code = "INTERNAL"
    retry_after_s: float | None = None  # sent as Retry-After (REST) / retry-after-ms (gRPC trailer)

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class InvalidInput(InfaasError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(InfaasError):
    status = 404
    grpc_code = "NOT_FOUND"


class AlreadyExists(InfaasError):
    status = 409
    grpc_code = "ALREADY_EXISTS"


class TooLarge(InfaasError):
    """A body, message, upload or decompressed stream past its limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unauthorized(InfaasError):
    status = 401
    grpc_code = "UNAUTHENTICATED"


class Unavailable(InfaasError):
    """The model or worker cannot serve now (not loaded, crashed, restarting, deadline missed)."""

    status = 503
    grpc_code = "UNAVAILABLE"
    retry_after_s = 1.0


class Overloaded(Unavailable):
    """Shed at admission: the request cannot finish by its deadline behind the work already queued
    (or the queue is at its bound). Refused before it costs any compute; retry after ``retry_after_s``."""

    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(Unavailable):
    """The request could not meet its deadline; it was dropped rather than served late."""

    grpc_code = "DEADLINE_EXCEEDED"


class Cancelled(InfaasError):
    """The caller gave up (timeout, disconnect, gRPC cancel); the worker dropped the request."""

    status = 499  # nginx's "client closed request": nobody is there to read it
    grpc_code = "CANCELLED"


class WorkerCrashed(Unavailable):
    pass


class ReplicaGone(Unavailable):
    """The worker does not host the variant the frontend routed to (the frontend's view was older than
    an unload): nothing ran, so the router may route the request again."""


class NameConflict(AlreadyExists):
    """A name was taken between the check and the write (a concurrent registration)."""


class RuntimeContractError(InfaasError):
    """A runtime broke its contract (e.g. returned a different number of rows)."""
