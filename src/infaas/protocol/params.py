"""One strict parser for every KServe v2 parameter infaas reads, on REST and gRPC alike.

Numbers must be finite and in range (JSON numbers, gRPC int64/uint64/double params, or numeric
strings for clients that can only send strings); booleans must be real booleans (JSON true/false,
gRPC bool_param, or the strings "true"/"false"). Anything else is a 400 / INVALID_ARGUMENT that
names the parameter. Parameters infaas does not know are passed through untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infaas.errors import InvalidInput

# the largest deadline a request may ask for (one day, in microseconds): past this, a typo
MAX_TIMEOUT_US = 86_400 * 10**6


def parse_bool(params: dict[str, Any], key: str, default: bool) -> bool:
    raw = params.get(key)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise InvalidInput(f"parameter '{key}' must be a boolean (true or false), got {raw!r}")


def parse_number(params: dict[str, Any], key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``); None when absent."""
    raw = params.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidInput(f"parameter '{key}' must be a number, got {type(raw).__name__} {raw!r}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise InvalidInput(f"parameter '{key}' must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"parameter '{key}' must be a finite number, got {raw!r}")
    if value < lo or (lo_open and value == lo) or value > hi:
        lower = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise InvalidInput(f"parameter '{key}' out of range: {value:g} (must be {lower} and <= {hi:g})")
    return value


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What infaas reads from a request's ``parameters``."""

    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost: float | None = None
    allow_estimated: bool = True
    timeout_us: float | None = None  # Triton's per-request timeout, microseconds
    drop_late: bool = True  # drop a request in the queue once it cannot meet its deadline
    binary_data_output: bool = False


def parse_request_params(params: dict[str, Any]) -> RequestParams:
    """The request-level parameters, each checked; raises :class:`InvalidInput` naming the first bad one."""
    if not params:
        return _EMPTY
    return RequestParams(
        latency_ms=parse_number(params, "latency_ms", 0.0, MAX_TIMEOUT_US / 1000, lo_open=True),
        min_accuracy=parse_number(params, "min_accuracy", 0.0, 1.0),
        max_cost=parse_number(params, "max_cost", 0.0, 1e12, lo_open=True),
        allow_estimated=parse_bool(params, "allow_estimated", True),
        timeout_us=parse_number(params, "timeout", 0.0, MAX_TIMEOUT_US) or None,  # 0: the default (Triton)
        drop_late=parse_bool(params, "drop_late", True),
        binary_data_output=parse_bool(params, "binary_data_output", False),
    )


_EMPTY = RequestParams()
