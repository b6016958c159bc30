"""The variant generator."""

from infaas.variants.generate import (
    Artifact,
    Skipped,
    batch_sizes,
    generate_artifacts,
    plan_variants,
)

__all__ = ["Artifact", "Skipped", "batch_sizes", "generate_artifacts", "plan_variants"]
