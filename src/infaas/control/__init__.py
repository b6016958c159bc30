"""The control loop beside the data plane: autoscaling (variants and workers) and offline jobs."""

from infaas.control.autoscaler import Autoscaler
from infaas.control.jobs import JobRunner

__all__ = ["Autoscaler", "JobRunner"]
