"""Decisions as pure functions: selection (and, later, autoscaling)."""

from infaas.policy.select import (
    Candidate,
    Choice,
    Decision,
    NoCandidate,
    Objective,
    Option,
    ScopeIndex,
    Unreachable,
    predict_ms,
    select,
    select_loaded,
    select_sorted,
)

__all__ = ["Candidate", "Choice", "Decision", "NoCandidate", "Objective", "Option", "ScopeIndex", "Unreachable",
           "predict_ms", "select", "select_loaded", "select_sorted"]  # fmt: skip
