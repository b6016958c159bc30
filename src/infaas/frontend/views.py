"""Read-only views for the protocol doors: health, KServe v2 metadata, Triton-style configuration
and statistics, the repository index, the workers. REST and gRPC answer from the same views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infaas import __version__
from infaas.serving.metrics import VariantStats
from infaas.tensors import v2_to_triton_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from infaas.catalog import Catalog
    from infaas.cluster.base import ClusterBackend
    from infaas.serving.metrics import Metrics
    from infaas.settings import Settings

EXTENSIONS = [
    "binary_tensor_data",
    "statistics",
    "model_configuration",
    "model_repository",
    "system_shared_memory",
    "infaas_modelless",
    "infaas_management",
]


class Views:
    def __init__(
        self,
        catalog: Catalog,
        cluster: ClusterBackend,
        settings: Settings,
        metrics: Metrics,
        worker_report: Callable[[], dict[str, dict[str, Any]]] = dict,
    ) -> None:
        self.catalog = catalog
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.worker_report = worker_report  # the controller's latest per-worker readings (cpu, memory)

    # ---- health and metadata ---------------------------------------------------------------
    def server_metadata(self) -> dict:
        return {
            "name": "infaas",
            "version": __version__,
            "extensions": EXTENSIONS,
            "hardware": self.catalog.kind.as_dict(),
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        _, _, variants, _ = self.catalog.resolve(name, version)
        return any(w.hosts(v.name) for v in variants for w in self.cluster.workers)

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        scope, sig, variants, _ = self.catalog.resolve(name, version)
        platform = "infaas_task" if scope.startswith("task") else "onnxruntime_onnx"
        return {
            "name": name,
            "versions": [v.name if scope.startswith("task") else v.short_name for v in variants],
            "platform": platform,
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in sig.inputs],
            "outputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in sig.outputs],
        }

    def model_config(self, name: str, version: str | None = None) -> dict:
        """Triton-style model configuration (what perf_analyzer and tritonclient read)."""
        scope, sig, variants, _ = self.catalog.resolve(name, version)
        loaded = [v for v in variants if any(w.hosts(v.name) for w in self.cluster.workers)]
        max_batch = max((v.max_batch for v in (loaded or variants)), default=0)

        def tensors(specs):
            return [
                {
                    "name": s.name,
                    "data_type": v2_to_triton_config(s.datatype),
                    "dims": list(s.shape[1:]) if max_batch else list(s.shape),
                }
                for s in specs
            ]

        return {
            "name": name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": max_batch,
            "input": tensors(sig.inputs),
            "output": tensors(sig.outputs),
            "dynamic_batching": {"max_queue_delay_microseconds": self.settings.max_queue_delay_us},
            "instance_group": [{"name": w.name, "kind": "KIND_CPU", "count": 1} for w in self.cluster.workers],
            "parameters": {"infaas_scope": {"string_value": scope}},
        }

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict:
        if name is None:
            variants = list(self.catalog.variants.values())
        else:
            scope, _, variants, _ = self.catalog.resolve(name, version)
            if scope.startswith("task"):  # one entry for the task as a whole, as for a Triton model
                total = VariantStats.total(self.metrics.variants[v.name] for v in variants)
                return {"model_stats": [{**total.json(name, "1"), "variants": [v.name for v in variants]}]}
        number = self.catalog.number
        return {
            "model_stats": [
                {**self.metrics.variants[v.name].json(v.architecture, str(number[v.name])), "variant": v.name}
                for v in variants
            ]
        }

    def repository_index(self) -> list[dict]:
        rows = []
        for task in self.catalog.tasks:
            rows.append(
                {
                    "name": task,
                    "version": "",
                    "state": "READY" if self.model_ready(task) else "UNAVAILABLE",
                    "reason": "task (model-less)",
                }
            )
        for v in self.catalog.variants.values():
            loaded = any(w.hosts(v.name) for w in self.cluster.workers)
            rows.append(
                {
                    "name": v.architecture,
                    "version": v.short_name,
                    "state": "READY" if loaded else "UNAVAILABLE",
                    "reason": "" if loaded else f"not loaded ({v.status})",
                }
            )
        return rows

    def workers_info(self) -> list[dict]:
        seen = self.worker_report()
        kind = self.catalog.kind.id
        return [
            {
                "name": w.name,
                "kind": w.kind.id if w.kind is not None else kind,
                "node": w.node,
                "cores": list(w.cores),
                "alive": w.alive,
                "state": w.state.value,
                "replicas": {v: s.value for v, s in w.replicas.items()},
                "pid": w.pid,
                "restarts": w.restarts,
                "loaded": sorted(w.loaded),
                "outstanding": w.outstanding(),
                "cpu": seen.get(w.name, {}).get("cpu"),
                "rss_mb": seen.get(w.name, {}).get("rss_mb"),
            }
            for w in self.cluster.workers
        ]
