"""The variant generator."""

from infaas.variants.artifact import Artifact, Skipped
from infaas.variants.generate import batch_sizes, generate_artifacts, plan_variants

__all__ = ["Artifact", "Skipped", "batch_sizes", "generate_artifacts", "plan_variants"]
