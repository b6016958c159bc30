"""The composition root (:mod:`infaas.app.services`) and the servers that run it."""

from infaas.app.server import BackgroundServer, build, free_port, serve
from infaas.app.services import Services, build_services

__all__ = ["BackgroundServer", "Services", "build", "build_services", "free_port", "serve"]
