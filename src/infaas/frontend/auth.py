"""API keys: ``Authorization: Bearer <key>`` (an HTTP header, or gRPC metadata), compared in constant time."""

from __future__ import annotations

import hmac

from infaas.errors import Unauthorized


def authorize(header: str, keys: tuple[str, ...]) -> None:
    """Raise :class:`Unauthorized` unless ``header`` carries one of ``keys``."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "this endpoint needs an API key: send 'authorization: Bearer <key>' (an HTTP header, or gRPC metadata)"
        )
    given = token.strip().encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        raise Unauthorized("API key not accepted")
