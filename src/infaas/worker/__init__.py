"""Runtimes, the batching queue, and the worker process."""

from infaas.worker.batcher import BatchQueue, Formed, Pending
from infaas.worker.runtime import OnnxRuntime, Runtime, infer_checked

__all__ = ["BatchQueue", "Formed", "OnnxRuntime", "Pending", "Runtime", "infer_checked"]
