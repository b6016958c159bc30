"""Decisions as pure functions: selection (and, later, autoscaling)."""

from infaas.policy.select import Candidate, Decision, NoCandidate, select_loaded

__all__ = ["Candidate", "Decision", "NoCandidate", "select_loaded"]
