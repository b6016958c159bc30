"""Where workers run: local processes (default) or Ray actors, behind one worker handle."""

from infaas.cluster.base import ClusterBackend, LoadSpec, WorkerHandle, WorkerResult
from infaas.cluster.handle import ManagedWorker
from infaas.cluster.local import LocalCluster, core_sets
from infaas.cluster.local_worker import local_worker

__all__ = [
    "ClusterBackend",
    "LoadSpec",
    "LocalCluster",
    "ManagedWorker",
    "WorkerHandle",
    "WorkerResult",
    "core_sets",
    "local_worker",
]
