"""The control side: placement, profiling, registration, autoscaling (variants and workers), offline
jobs and the controller lease."""

from infaas.control.autoscaler import Autoscaler
from infaas.control.jobs import JobRunner

__all__ = ["Autoscaler", "JobRunner"]
