"""Prometheus metrics and Triton-style per-variant statistics, kept by the router."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from infaas.serving.door import refusal_counter

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def json(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VariantStats:
    """Triton statistics extension counters for one variant."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    batches: dict[int, _Duration] = field(default_factory=lambda: defaultdict(_Duration))

    def json(self, name: str, version: str) -> dict:
        """Triton's statistics entry. Compute is timed as one span (inputs, run, outputs): the input
        and output phases carry its count with 0 ns, as Triton clients expect equal counts."""
        zero = {"count": 0, "ns": 0}

        def counted(d: _Duration) -> dict:
            return {"count": d.count, "ns": 0}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": counted(self.compute_infer),
                "compute_infer": self.compute_infer.json(),
                "compute_output": counted(self.compute_infer),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {"batch_size": b, "compute_input": counted(d), "compute_infer": d.json(), "compute_output": counted(d)}
                for b, d in sorted(self.batches.items())
            ],
        }

    @classmethod
    def total(cls, parts: Iterable[VariantStats]) -> VariantStats:
        """The sum of several variants' counters (a task's, for clients that ask by task name)."""
        out = cls()
        for p in parts:
            out.inference_count += p.inference_count
            out.execution_count += p.execution_count
            out.last_inference_ms = max(out.last_inference_ms, p.last_inference_ms)
            for key in ("success", "fail", "queue", "compute_infer"):
                mine, theirs = getattr(out, key), getattr(p, key)
                mine.count += theirs.count
                mine.ns += theirs.ns
            for b, d in p.batches.items():
                out.batches[b].count += d.count
                out.batches[b].ns += d.ns
        return out


class Metrics:
    """Everything the frontend counts; one instance per server (no global registry). Names follow
    Prometheus's conventions (units in names, ``_total`` counters, ``_seconds`` histograms) and
    every label value is bounded (the router labels a request naming no registered model
    ``(unknown)``)."""

    def __init__(
        self,
        queue_depths: Callable[[], Iterable[tuple[str, str, int]]],
        workers: Callable[[], Iterable[tuple[str, bool, int]]],
        decisions: Callable[[], tuple[Mapping[str, int], int]] = lambda: ({}, 0),
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "infaas_requests", "Inference requests", ["model", "variant", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "infaas_request_duration_seconds",
            "End-to-end request latency in the frontend",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "infaas_batch_rows", "Rows per executed batch", ["variant"], buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.door_refused = refusal_counter(self.registry)
        # the selection predicted the request in time, and the worker's admission (or its queue) then
        # refused it: the two estimates disagreed, or the queue changed in between (issue 33)
        self.selected_then_refused = Counter(
            "infaas_selected_then_refused",
            "Requests the selection predicted in time that the worker then refused",
            ["variant"],
            registry=self.registry,
        )
        self.variants: dict[str, VariantStats] = defaultdict(VariantStats)
        self._children: dict[tuple[str, str], tuple] = {}
        self.registry.register(_LiveCollector(queue_depths, workers, decisions))

    def success(
        self,
        model: str,
        variant: str,
        rows: int,
        total_ns: int,
        queue_ns: int,
        compute_ns: int,
        batch_size: int,
        first_in_batch: bool,
    ) -> None:
        children = self._children.get((model, variant))
        if children is None:  # label lookups cost more than the increments: do them once
            children = self._children[(model, variant)] = (
                self.requests.labels(model, variant, "200"),
                self.latency.labels(variant),
                self.batch_size.labels(variant),
                self.variants[variant],
            )
        ok, latency, batch, st = children
        ok.inc()
        latency.observe(total_ns / 1e9)
        st.inference_count += rows
        st.last_inference_ms = int(time.time() * 1000)
        st.success.add(total_ns)
        st.queue.add(queue_ns)
        if first_in_batch:
            batch.observe(batch_size)
            st.execution_count += 1
            st.compute_infer.add(compute_ns)
            st.batches[batch_size].add(compute_ns)

    def failure(self, model: str, variant: str, code: int, total_ns: int) -> None:
        self.requests.labels(model, variant or "-", str(code)).inc()
        if variant:
            self.variants[variant].fail.add(total_ns)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Gauges and counters read at scrape time from the live cluster state and the decision log."""

    def __init__(self, queue_depths, workers, decisions) -> None:
        self.queue_depths = queue_depths
        self.workers = workers
        self.decisions = decisions

    def collect(self):
        depth = GaugeMetricFamily(
            "infaas_queue_depth_requests", "Requests in flight per variant and worker", labels=["variant", "worker"]
        )
        replicas = GaugeMetricFamily("infaas_replicas", "Workers with the variant loaded", labels=["variant"])
        hosting: dict[str, int] = defaultdict(int)
        for variant, worker, n in self.queue_depths():
            depth.add_metric([variant, worker], n)
            hosting[variant] += 1
        for variant, n in sorted(hosting.items()):
            replicas.add_metric([variant], n)
        up = GaugeMetricFamily("infaas_worker_up", "1 when the worker process is running", labels=["worker"])
        restarts = CounterMetricFamily(
            "infaas_worker_restarts", "Times the worker was restarted after dying", labels=["worker"]
        )
        for name, alive, n in self.workers():
            up.add_metric([name], 1 if alive else 0)
            restarts.add_metric([name], n)
        counts, not_kept = self.decisions()
        decided = CounterMetricFamily(
            "infaas_decisions",
            "Decisions logged, by kind (scaling actions, loads, jobs, selections...)",
            labels=["kind"],
        )
        for kind, n in sorted(counts.items()):
            decided.add_metric([kind], n)
        sampled = CounterMetricFamily(
            "infaas_decisions_not_kept", "Per-query selections sampled out of the decision log (counted, not kept)"
        )
        sampled.add_metric([], not_kept)
        yield from (depth, replicas, up, restarts, decided, sampled)
