"""Data plane and protocol doors (REST now; gRPC later)."""

from infaas.frontend.catalog import Catalog
from infaas.frontend.dataplane import DataPlane
from infaas.frontend.rest import build_app
from infaas.frontend.server import BackgroundServer, build, free_port, serve

__all__ = ["BackgroundServer", "Catalog", "DataPlane", "build", "build_app", "free_port", "serve"]
