"""The request path: the router (resolve, route, execute, respond) and its metrics."""

from infaas.serving.metrics import Metrics
from infaas.serving.router import Router

__all__ = ["Metrics", "Router"]
