"""Selection without an objective (an architecture or an explicit variant): the most accurate
loaded variant that takes the batch, on its least-busy worker."""

from __future__ import annotations

from dataclasses import dataclass

from infaas.registry.types import Variant


@dataclass(frozen=True, slots=True)
class Candidate:
    """A loaded variant and, for each worker hosting it, that worker's outstanding requests."""

    variant: Variant
    workers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    variant: Variant
    worker: str
    reason: str


class NoCandidate(Exception):
    """Nothing loaded can take the request; the message says why."""


class BatchTooLarge(NoCandidate):
    """Variants are loaded, but none takes a batch this large."""


def _accuracy_text(v: Variant) -> str:
    return "unknown accuracy" if v.accuracy is None else f"accuracy {v.accuracy:.3f} ({v.accuracy_source})"


def select_loaded(candidates: list[Candidate], rows: int, scope: str) -> Decision:
    """Most accurate loaded variant whose max batch takes ``rows``; then its least-loaded worker."""
    fits = [c for c in candidates if c.workers and c.variant.max_batch >= rows]
    if not fits:
        if any(c.workers for c in candidates):
            biggest = max(c.variant.max_batch for c in candidates if c.workers)
            raise BatchTooLarge(f"batch of {rows} exceeds the largest max batch loaded for {scope} ({biggest})")
        raise NoCandidate(f"no variant of {scope} is loaded")
    best = max(
        fits,
        key=lambda c: (
            -1.0 if c.variant.accuracy is None else c.variant.accuracy,
            -sum(n for _, n in c.workers),
        ),
    )
    worker, queued = min(best.workers, key=lambda w: w[1])
    why = (
        f"{scope}: {best.variant.name} is the most accurate loaded variant that takes a batch of "
        f"{rows} ({_accuracy_text(best.variant)}); worker {worker} has the fewest requests in flight ({queued})"
    )
    if len(fits) == 1:
        why = (
            f"{scope}: {best.variant.name} is the only loaded variant that takes a batch of {rows}; "
            f"worker {worker} has the fewest requests in flight ({queued})"
        )
    return Decision(best.variant, worker, why)
