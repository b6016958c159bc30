"""Registry records, in the vocabulary of DESIGN.md: task, architecture, variant, profile."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AccuracySource = Literal["measured", "declared", "estimated", "unknown"]
VariantStatus = Literal["pending", "ready", "rejected", "failed"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Record):
    """One input or output: KServe v2 datatype and shape (-1 = any size; dim 0 is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


class Signature(_Record):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def compatible_with(self, other: Signature) -> str | None:
        """None when ``other`` accepts the same requests and answers the same outputs; else why not."""
        for mine, theirs, what in (
            (self.inputs, other.inputs, "inputs"),
            (self.outputs, other.outputs, "outputs"),
        ):
            a = {(t.name, t.datatype, t.shape[1:]) for t in mine}
            b = {(t.name, t.datatype, t.shape[1:]) for t in theirs}
            if a != b:
                return f"{what} differ: task has {sorted(a)}, model has {sorted(b)}"
        return None


class Task(_Record):
    """A use case with one input signature and one accuracy metric."""

    name: str
    signature: Signature
    metric: str = "top1"
    description: str = ""
    created_at: float = Field(default_factory=time.time)


class Architecture(_Record):
    """One trained model registered by a user for a task."""

    name: str
    task: str
    framework: str = "onnx"
    accuracy: float | None = None
    accuracy_source: AccuracySource = "unknown"
    signature: Signature
    model_hash: str
    validation_hash: str | None = None
    calibration_hash: str | None = None
    max_batch: int = 16
    description: str = ""
    created_at: float = Field(default_factory=time.time)


class Variant(_Record):
    """One executable form of an architecture. Generated, never hand-written."""

    name: str
    architecture: str
    format: str = "onnx-fp32"
    provider: str = "cpu"
    threads: int = 1
    max_batch: int = 16
    artifact_hash: str
    parent: str | None = None
    method: str = "baseline"
    params: dict[str, Any] = Field(default_factory=dict)
    accuracy: float | None = None
    accuracy_source: AccuracySource = "unknown"
    status: VariantStatus = "ready"
    reason: str = ""
    created_at: float = Field(default_factory=time.time)

    @property
    def short_name(self) -> str:
        """The name without its architecture prefix, e.g. ``fp32.cpu.t2.b16``."""
        prefix = self.architecture + "."
        return self.name[len(prefix) :] if self.name.startswith(prefix) else self.name


class Profile(_Record):
    """What was measured for a variant on a hardware kind."""

    variant: str
    hardware: str
    latency_p50_ms: dict[int, float] = Field(default_factory=dict)
    latency_p99_ms: dict[int, float] = Field(default_factory=dict)
    fit_slope_ms: float = 0.0
    fit_intercept_ms: float = 0.0
    throughput: float = 0.0
    peak_memory_mb: float = 0.0
    load_time_ms: float = 0.0
    accuracy: float | None = None
    accuracy_source: AccuracySource = "unknown"
    agreement: float | None = None
    cost_per_1k: float = 0.0
    best_batch: int = 1
    measured_at: float = Field(default_factory=time.time)

    def predict_ms(self, batch: int) -> float:
        return self.fit_slope_ms * batch + self.fit_intercept_ms


def variant_name(architecture: str, fmt: str, provider: str, threads: int, max_batch: int) -> str:
    """Self-explaining variant names, e.g. ``digits-mlp.fp32.cpu.t2.b16``."""
    short_fmt = fmt.removeprefix("onnx-")
    return f"{architecture}.{short_fmt}.{provider}.t{threads}.b{max_batch}"


def linear_fit(batches: list[int], ms: list[float]) -> tuple[float, float]:
    """Least-squares ``latency(b) = slope*b + intercept``; one point gives a pure slope."""
    if len(batches) < 2:
        return ms[0], 0.0
    import numpy as np

    slope, intercept = np.polyfit(np.asarray(batches, float), np.asarray(ms, float), 1)
    return float(slope), float(intercept)
