"""The narrow interfaces the control loops are handed by the composition root (``infaas.app``).

The controller and the job runner never import the router: they get an object with these
methods, so the dependency runs one way (app -> control, app -> serving).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from infaas.catalog import Catalog
    from infaas.cluster.base import ClusterBackend, WorkerHandle
    from infaas.protocol.types import InferRequest, InferResponse
    from infaas.registry import Variant


class DecisionSink(Protocol):
    """Anything that records a decision with its reason (the app's :class:`infaas.decisions.DecisionLog`)."""

    def log_decision(self, kind: str, reason: str, **fields: Any) -> dict: ...


class Actuator(DecisionSink, Protocol):
    """What the autoscaler acts through (:class:`infaas.control.placement.Placement`): the
    cluster, the catalog, and loads / resizes / swaps of variants."""

    cluster: ClusterBackend
    catalog: Catalog

    async def load(self, variant: Variant, worker: WorkerHandle) -> dict: ...
    async def resize(self, variant: Variant, worker: WorkerHandle, instances: int) -> dict: ...
    async def swap(self, old: Variant, new: Variant, kind: str, reason: str) -> None: ...


class InferencePort(Protocol):
    """What the job runner needs (:class:`infaas.serving.router.Router`): resolve a model name,
    and serve a request (offline)."""

    catalog: Catalog

    async def infer(self, req: InferRequest, offline: bool = False) -> InferResponse: ...
