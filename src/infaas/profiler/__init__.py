"""Measure variants in isolated worker processes; judge them."""

from infaas.profiler.profile import ProfileReport, profile_architecture
from infaas.registry.types import linear_fit

__all__ = ["ProfileReport", "linear_fit", "profile_architecture"]
