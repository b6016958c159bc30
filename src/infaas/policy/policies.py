"""One policy interface — selection and autoscaling as a pair — with two implementations: ours
(``infaas``) and the ATC'21 rules (``infaas-original``). The composition root picks one by name;
the router, the controller and the simulator call it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from infaas.policy.autoscale import (
    Action,
    Memory,
    ScalingConfig,
    VariantLoad,
    WorkerRoom,
    autoscale,
)
from infaas.policy.original import NAME as ORIGINAL
from infaas.policy.original import (
    OriginalConfig,
    OriginalMemory,
    autoscale_original,
    select_original,
)
from infaas.policy.select import Choice, Objective, Option, ScopeIndex, Slot, select_sorted
from infaas.registry.types import Profile, Variant

OURS = "infaas"
NAMES = (OURS, ORIGINAL)

Family = dict[str, list[tuple[Variant, Profile]]]


class Policy(Protocol):
    """Pure decisions: no clock, no I/O. ``memory`` is the hysteresis state the caller keeps and
    passes back each time."""

    name: str
    scaling: ScalingConfig  # the thresholds every state report uses (state_of), whichever policy acts
    learns_latency: bool  # whether the router learns a residual from this policy's predictions
    # whether its selection reads a replica's whole Slot (batching, learned correction, the work of
    # other variants on its cores) or only (worker, rows in flight): the caller builds no more
    reads_slots: bool

    def select(
        self,
        objective: Objective,
        loaded: list[Option],
        index: ScopeIndex,
        rows: int,
        scope: str,
        live: Callable[[str], tuple[Slot, ...] | None],
        flagged: Collection[str],
    ) -> Choice: ...

    def memory(self) -> Any: ...

    def autoscale(
        self, loads: list[VariantLoad], family: Family, rooms: list[WorkerRoom], now: float, memory: Any
    ) -> tuple[list[Action], Any]: ...

    def overloaded(self, memory: Any, judged: dict[str, tuple[str, str]]) -> dict[str, str]:
        """The variants that count as overloaded now (offline jobs yield to them; the original
        policy's selection avoids them), each with why; ``judged``: variant -> (state, why) as
        :func:`~infaas.policy.autoscale.state_of` reports it."""
        ...

    def worker_removed(self, memory: Any, worker: str) -> None:
        """Forget what ``memory`` holds about a removed worker (a new one may take its name)."""
        ...


@dataclass(frozen=True)
class InfaasPolicy:
    """Ours: the cheapest variant meeting the objective with queue-aware predictions; scaling by
    demand against measured capacity (:mod:`infaas.policy.select`, :mod:`infaas.policy.autoscale`)."""

    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    name: str = OURS
    learns_latency: bool = True
    reads_slots: bool = True

    def select(self, objective, loaded, index, rows, scope, live, flagged) -> Choice:
        return select_sorted(objective, loaded, index, rows, scope, live)

    def memory(self) -> Memory:
        return Memory()

    def autoscale(self, loads, family, rooms, now, memory):
        return autoscale(loads, family, rooms, now, memory, self.scaling)

    def overloaded(self, memory, judged) -> dict[str, str]:
        return {name: why for name, (state, why) in judged.items() if state == "overloaded"}

    def worker_removed(self, memory, worker) -> None:
        memory.empty_since.pop(worker, None)


@dataclass(frozen=True)
class OriginalPolicy:
    """The ATC'21 rules (:mod:`infaas.policy.original`): its own overload flags with hysteresis
    decide, and avoid flagged variants at selection; its predictions are its fitted lines, not
    learned."""

    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    original: OriginalConfig = field(default_factory=OriginalConfig)
    name: str = ORIGINAL
    learns_latency: bool = False
    reads_slots: bool = False  # least slack by its fitted line, then the fewest rows in flight

    def select(self, objective, loaded, index, rows, scope, live, flagged) -> Choice:
        return select_original(objective, loaded, index, rows, scope, live, flagged)

    def memory(self) -> OriginalMemory:
        return OriginalMemory()

    def autoscale(self, loads, family, rooms, now, memory):
        return autoscale_original(loads, family, rooms, now, memory, self.original)

    def overloaded(self, memory, judged) -> dict[str, str]:
        return dict(memory.flagged)  # its own flags, with hysteresis, whatever the shared report says

    def worker_removed(self, memory, worker) -> None:
        return None  # its worker checks keep no per-worker state


def policy_named(name: str, scaling: ScalingConfig) -> Policy:
    """The policy called ``name`` (``infaas`` or ``infaas-original``) with these scaling thresholds."""
    if name == ORIGINAL:
        return OriginalPolicy(scaling, OriginalConfig(keep_warm=scaling.keep_warm))
    if name == OURS:
        return InfaasPolicy(scaling)
    raise ValueError(f"unknown policy {name!r}: one of {', '.join(NAMES)}")


def scaling_from(settings: Any) -> ScalingConfig:
    """The thresholds a server's settings set (``scale_down_s``, ``idle_unload_s``, ``keep_warm``)."""
    return ScalingConfig(
        scale_down_s=settings.scale_down_s, idle_unload_s=settings.idle_unload_s, keep_warm=settings.keep_warm
    )


def with_min_workers(policy: Policy, min_workers: int) -> Policy:
    """The same policy with the cluster's floor of workers (known once the backend is built)."""
    return replace(policy, scaling=replace(policy.scaling, min_workers=min_workers))  # type: ignore[type-var]
