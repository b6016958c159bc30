"""The protocol doors: KServe v2 REST (with Triton's extensions and the management API) and gRPC,
thin adapters over the composition root's services."""

from infaas.frontend.rest import build_app

__all__ = ["build_app"]
