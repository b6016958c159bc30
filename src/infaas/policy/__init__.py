"""Decisions as pure functions: selection and autoscaling."""

from infaas.policy.autoscale import autoscale
from infaas.policy.loaded import BatchTooLarge, Candidate, Decision, NoCandidate, select_loaded
from infaas.policy.scaling import (
    Action,
    Memory,
    Sample,
    ScalingConfig,
    VariantLoad,
    WorkerRoom,
    state_of,
)
from infaas.policy.select import (
    Choice,
    Objective,
    Option,
    Saturated,
    ScopeIndex,
    Slot,
    Unreachable,
    drain_ms,
    predict_ms,
    select,
    select_sorted,
)

__all__ = [
    "Action",
    "Memory",
    "Sample",
    "ScalingConfig",
    "VariantLoad",
    "WorkerRoom",
    "autoscale",
    "state_of",
    "BatchTooLarge",
    "Candidate",
    "Choice",
    "Decision",
    "NoCandidate",
    "Objective",
    "Option",
    "Saturated",
    "ScopeIndex",
    "Slot",
    "Unreachable",
    "drain_ms",
    "predict_ms",
    "select",
    "select_loaded",
    "select_sorted",
]
