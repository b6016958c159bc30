"""Measure variants in isolated worker processes; judge them."""

from infaas.profiler.profile import HARDWARE, ProfileReport, linear_fit, profile_architecture

__all__ = ["HARDWARE", "ProfileReport", "linear_fit", "profile_architecture"]
