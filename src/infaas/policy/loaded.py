"""Selection without an objective (an architecture or an explicit variant): the most accurate
loaded variant that takes the batch, on its least-busy worker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Protocol, TypeVar

from infaas.registry.types import Profile, Variant


class _Busy(Protocol):
    @property
    def loaded(self) -> Sized: ...
    def outstanding(self) -> int: ...


W = TypeVar("W", bound=_Busy)


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


def least_busy(workers: Iterable[W]) -> W:
    """Where a cold load goes: the worker hosting the fewest variants, then with the fewest requests
    outstanding (the first such in order)."""
    return min(workers, key=lambda w: (len(w.loaded), w.outstanding()))


def first_choice(
    variants: Iterable[Variant], profiles: Mapping[str, Profile], cores: int, statuses: tuple[str, ...] = ("ready",)
) -> Variant | None:
    """What to load for an architecture until the policy decides: of the variants in ``statuses``
    (those that fit a worker's ``cores``, if any does), the largest max batch, then the most
    accurate, then the highest measured throughput."""
    ready = [v for v in variants if v.status in statuses]
    ready = [v for v in ready if v.threads <= cores] or ready
    if not ready:
        return None

    def rank(v: Variant):
        prof = profiles.get(v.name)
        return (v.max_batch, -1.0 if v.accuracy is None else v.accuracy, prof.throughput if prof else 0.0)

    return max(ready, key=rank)
