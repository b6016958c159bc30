"""Registry records, in the vocabulary of DESIGN.md: task, architecture, variant, profile."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

AccuracySource = Literal["measured", "declared", "estimated", "reference", "unknown"]
# A task's quality metric (higher is better; ``min_accuracy`` objectives are in its unit):
# top1: top-1 accuracy (classifiers); cosine: mean cosine similarity of every output to the parent
# variant's (embeddings, any float output); rel-l2: 1 - relative L2 error to the parent (regression)
Metric = Literal["top1", "cosine", "rel-l2"]
METRICS: tuple[str, ...] = ("top1", "cosine", "rel-l2")
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
    metric: Metric = "top1"
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
    # the same model as a PyTorch program (``torch.export``'s .pt2), when one was registered: the
    # source of the ``pt-*`` variants
    program_hash: str | None = None
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
    """What was measured for a variant on a hardware kind (``infaas.hardware``), and the verdict there.

    Quality is in the task's metric. ``accuracy_low``/``accuracy_high`` is its 95 % interval over
    ``samples`` evaluation inputs; ``loss_high`` is the one-sided 95 % upper bound of what the variant
    loses against its parent, which is what judging compares with the bound."""

    variant: str
    hardware: str
    node: str = ""  # where it was measured: "local" (this machine) or the Ray node's address
    status: VariantStatus = "ready"
    reason: str = ""
    metric: Metric = "top1"
    samples: int = 0
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    loss: float | None = None
    loss_high: float | None = None
    axis_latency_ms: dict[int, float] = Field(default_factory=dict)  # batch-1 p50 over a dynamic axis
    axis: str = ""  # which input axis that is, e.g. "input_ids[1]"
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

    # (the table it was built from, sizes, monotone ms): rebuilt when a copy carries another table
    _table: tuple[dict, list[int], list[float], dict] | None = PrivateAttr(default=None)

    def predict_ms(self, batch: int) -> float:
        """Latency of one batch of ``batch`` rows. From the measured p50 per batch size: linear
        between measured sizes, in proportion below the smallest, and past the largest along the
        last measured segment (the fit's slope with one point); never below a smaller batch's, never
        zero. Without measurements, the linear fit, clamped at half its slope per row (a fit can cross
        zero at small batches, which would make capacity infinite)."""
        # the private dict read directly: pydantic's attribute hook for private attributes took 6 us
        # of a 9-us call, on the router's hot path (every slot of every candidate of every request);
        # answers are memoised per batch size (the simulator asks ~250 times per request)
        private = self.__pydantic_private__
        table = private["_table"] if private else None
        if table is None or table[0] is not self.latency_p50_ms:
            sizes = sorted(self.latency_p50_ms)
            ms, top = [], 0.0
            for b in sizes:  # a larger batch is never predicted faster than a smaller one
                top = max(top, self.latency_p50_ms[b])
                ms.append(top)
            table = self._table = (self.latency_p50_ms, sizes, ms, {})
        _, sizes, ms, memo = table
        batch = max(1, batch)
        if not sizes or ms[-1] <= 0:
            # floor: half the fit's marginal cost of the rows (a fit below that crossed zero nearby)
            return max(self.fit_slope_ms * batch + self.fit_intercept_ms, 0.5 * self.fit_slope_ms * batch, 1e-3)
        got = memo.get(batch)
        if got is None:
            got = self._between(sizes, ms, batch)
            if len(sizes) > 1 and len(memo) < 4096:  # (one size: the fit's slope, which may change)
                memo[batch] = got
        return got

    def axis_factor(self, length: int | None) -> float:
        """How a request whose dynamic axis (``axis``, e.g. a sequence) is ``length`` long runs against the
        representative length the batch table was measured at: the ratio of the batch-1 timings over
        that axis, interpolated. The representative is half the longest length timed (the profiler
        times r/8, r/4, r/2, r and 2r); below the shortest timed length, the shortest's time (a
        floor: fixed costs do not shrink); past the longest, along the last segment. 1.0 without
        timings over an axis, or without a length."""
        table = self.axis_latency_ms
        if not length or len(table) < 2:
            return 1.0
        sizes = sorted(table)
        ref = _along(sizes, table, max(sizes) // 2)
        return max(_along(sizes, table, length), 1e-6) / ref if ref > 0 else 1.0

    def cost_ms(self, rows: int, length: int | None = None) -> float:
        """Latency of one batch of ``rows`` requests whose dynamic axis is ``length`` long: the batch
        table (``predict_ms``) scaled by :meth:`axis_factor`. The one cost of a request's shape that the
        selection, the worker's admission and its batcher all use."""
        return self.predict_ms(rows) * self.axis_factor(length)

    def _between(self, sizes: list[int], ms: list[float], batch: float) -> float:
        """``predict_ms`` from the measured table (``sizes`` ascending, ``ms`` monotone)."""
        if batch <= sizes[0]:
            return max(ms[0] * batch / sizes[0], 1e-3)
        if batch >= sizes[-1]:
            slope = (ms[-1] - ms[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else self.fit_slope_ms
            if slope <= 0:
                slope = ms[-1] / sizes[-1]  # flat or falling measurements: at least per row
            return ms[-1] + slope * (batch - sizes[-1])
        i = next(k for k, b in enumerate(sizes) if b >= batch)
        b0, b1 = sizes[i - 1], sizes[i]
        return ms[i - 1] + (ms[i] - ms[i - 1]) * (batch - b0) / (b1 - b0)


RUNTIMES = ("onnxruntime", "openvino", "pytorch")
# the formats of a variant per runtime: ORT runs ``onnx-*``; OpenVINO runs ``ov-*`` from the same
# ONNX graphs (fp32 and bf16 from the registered one, int8 from ORT's QDQ artifact or NNCF's)
OPENVINO_FORMATS = {
    "ov-fp32": {"precision": "f32"},
    "ov-bf16": {"precision": "bf16"},
    "ov-int8": {"precision": "f32"},
    "ov-int8-nncf": {"precision": "f32"},
}


# PyTorch runs ``pt-*`` from the registered program: eager, in fp32 or under bf16 autocast, or
# compiled ahead of time for this CPU kind by AOTInductor (``pt-aot-fp32``)
TORCH_FORMATS = {
    "pt-fp32": {"precision": "fp32"},
    "pt-bf16": {"precision": "bf16"},
    "pt-aot-fp32": {"precision": "fp32", "compiled": True},
}


def runtime_of(fmt: str) -> tuple[str, dict]:
    """(runtime, its load options) of a variant's format: ``ov-*`` OpenVINO, ``pt-*`` PyTorch, else
    ONNX Runtime."""
    if fmt in OPENVINO_FORMATS:
        return "openvino", dict(OPENVINO_FORMATS[fmt])
    if fmt in TORCH_FORMATS:
        return "pytorch", dict(TORCH_FORMATS[fmt])
    return "onnxruntime", {}


def variant_name(architecture: str, fmt: str, provider: str, threads: int, max_batch: int) -> str:
    """Self-explaining variant names, e.g. ``digits-mlp.fp32.cpu.t2.b16``."""
    short_fmt = fmt.removeprefix("onnx-")
    return f"{architecture}.{short_fmt}.{provider}.t{threads}.b{max_batch}"


def linear_fit(batches: list[int], ms: list[float]) -> tuple[float, float]:
    """Least-squares ``latency(b) = slope*b + intercept``; one point gives a pure slope."""
    if len(batches) < 2:
        return ms[0], 0.0
    # closed form, in plain floats: the original policy fits a line per candidate per request, and
    # numpy's polyfit (an SVD) took 50 us a call there
    n = len(batches)
    mx, my = sum(batches) / n, sum(ms) / n
    sxx = sum((x - mx) ** 2 for x in batches)
    if sxx == 0:
        return my / mx if mx else my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(batches, ms, strict=True)) / sxx
    return float(slope), float(my - slope * mx)


def _along(sizes: list[int], table: dict[int, float], x: float) -> float:
    """``table`` (length -> ms) at ``x``: linear between measured lengths, the shortest's below them,
    extended along the last segment past them."""
    if x <= sizes[0]:
        return table[sizes[0]]
    for lo, hi in itertools.pairwise(sizes):
        if x <= hi:
            return table[lo] + (table[hi] - table[lo]) * (x - lo) / (hi - lo)
    lo, hi = sizes[-2], sizes[-1]
    return table[hi] + (table[hi] - table[lo]) * (x - hi) / (hi - lo)


def axis_length(axis: str, shapes: Mapping[str, Sequence[int]]) -> int | None:
    """The length of a profile's dynamic axis in a request's input shapes: ``axis`` names it per input
    (``"input_ids[1], attention_mask[1]"``), the first of those the request carries answers. None when
    there is no such axis or input."""
    for part in axis.split(","):
        name, _, dim = part.strip().removesuffix("]").rpartition("[")
        shape = shapes.get(name)
        if shape is not None and dim.isdigit() and int(dim) < len(shape):
            return int(shape[int(dim)])
    return None


SCALE_HALF_LIFE_S = 10.0


def decayed(scale: float, idle_s: float, half_life_s: float = SCALE_HALF_LIFE_S) -> float:
    """A learned batch-time correction (measured / profiled) ``idle_s`` after a batch last set it:
    back toward the profile's 1.0 by half every ``half_life_s``. What it measured (other work on the
    cores) passes, and a correction no batch refreshes would otherwise keep a replica refused for
    good: predicted over an objective, sent nothing, never measured again. The worker's admission
    and the selection both decay it, each from its own clock."""
    return scale if idle_s <= 0 else 1.0 + (scale - 1.0) * 0.5 ** (idle_s / half_life_s)
