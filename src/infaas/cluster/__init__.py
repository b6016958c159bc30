"""Where workers run: local processes (default); Ray actors later."""

from infaas.cluster.base import ClusterBackend, LoadSpec, WorkerHandle, WorkerResult
from infaas.cluster.local import LocalCluster, LocalWorker, core_sets

__all__ = ["ClusterBackend", "LoadSpec", "LocalCluster", "LocalWorker", "WorkerHandle",
           "WorkerResult", "core_sets"]  # fmt: skip
