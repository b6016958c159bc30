"""Registration of tasks, architectures, variants and profiles."""

from infaas.registry.modelstore import ModelStore
from infaas.registry.registry import Registry, default_threads, measure_accuracy
from infaas.registry.store import MemoryStore, MetadataStore, SQLiteStore
from infaas.registry.types import (
    Architecture,
    Profile,
    Signature,
    Task,
    TensorSpec,
    Variant,
    variant_name,
)

__all__ = [
    "Architecture",
    "MemoryStore",
    "MetadataStore",
    "ModelStore",
    "Profile",
    "Registry",
    "SQLiteStore",
    "Signature",
    "Task",
    "TensorSpec",
    "Variant",
    "default_threads",
    "measure_accuracy",
    "variant_name",
]
