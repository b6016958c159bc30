"""What the generator makes and the quantizer reads: an artifact (one generated format of an
architecture), a format skipped with its reason, and the calibration rows of the registered data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from infaas.registry import Architecture, Registry


@dataclass(frozen=True)
class Artifact:
    """One generated format of an architecture (shared by its execution configurations)."""

    format: str
    key: str  # model store key
    method: str
    params: dict = field(default_factory=dict)


@dataclass
class Skipped:
    format: str
    reason: str


CALIBRATION_ROWS = 128


def calibration_split(n: int) -> int:
    """How many leading rows of registered data calibrate (at most 128, at most half); the profiler
    evaluates on the rows after them, which the quantizer never saw."""
    return min(CALIBRATION_ROWS, max(1, n // 2))


def calibration_inputs(registry: Registry, arch: Architecture) -> dict[str, np.ndarray] | None:
    """Inputs for calibration: the leading rows of the calibration data, else of the validation data."""
    from infaas.registry.onnxinfo import load_validation, named_inputs

    key = arch.calibration_hash or arch.validation_hash
    if key is None:
        return None
    inputs, _ = load_validation(registry.models.path(key).read_bytes(), need_labels=False)
    inputs = named_inputs(inputs, arch.signature)
    n = len(next(iter(inputs.values())))
    return {k: np.ascontiguousarray(v[: calibration_split(n)]) for k, v in inputs.items()}
