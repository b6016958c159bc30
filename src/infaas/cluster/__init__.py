"""Where workers run: local processes (default); Ray actors later."""

from infaas.cluster.base import ClusterBackend, LoadSpec, WorkerHandle, WorkerResult
from infaas.cluster.local import LocalCluster, core_sets
from infaas.cluster.local_worker import LocalWorker

__all__ = ["ClusterBackend", "LoadSpec", "LocalCluster", "LocalWorker", "WorkerHandle", "WorkerResult", "core_sets"]
