"""The narrow interfaces the control loops are handed by the composition root (``infaas.frontend.server``).

The controller and the job runner never import the data plane: they get an object with these
methods, so the dependency runs one way (server -> control, server -> frontend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from infaas.cluster.base import ClusterBackend, WorkerHandle
    from infaas.protocol.types import InferRequest, InferResponse
    from infaas.registry import Variant


class DecisionLog(Protocol):
    def log_decision(self, kind: str, reason: str, **fields: Any) -> dict: ...


class Actuator(DecisionLog, Protocol):
    """What the autoscaler acts through: the cluster, the catalog, and loads / swaps of variants."""

    cluster: ClusterBackend
    catalog: Any  # infaas.frontend.catalog.Catalog: tasks, variants, profiles, by_arch

    async def load(self, variant: Variant, worker: WorkerHandle) -> dict: ...
    async def swap(self, old: Variant, new: Variant, kind: str, reason: str) -> None: ...


class InferencePort(DecisionLog, Protocol):
    """What the job runner needs: resolve a model name, and serve a request (offline)."""

    catalog: Any

    async def infer(self, req: InferRequest, offline: bool = False) -> InferResponse: ...
