"""What a simulation runs on: a catalog, apps, a trace and a fleet (with the settings, the seed and
the tail after the last arrival), and the clear errors for inputs that do not fit together."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infaas.settings import Settings
from infaas.sim.catalog import SimCatalog
from infaas.sim.fleet import Fleet
from infaas.workload import App


@dataclass(frozen=True)
class Scenario:
    """What every contender of one comparison shares."""

    catalog: SimCatalog
    apps: list[App]
    trace: list[tuple[float, str]]
    fleet: Fleet = field(default_factory=Fleet)
    settings: Settings | None = None
    seed: int = 0
    tail_s: float = 60.0
    overhead_ms: float = 0.0  # the serving path's own time per request (door, router, wire), half each way

    def check(self) -> None:
        if self.overhead_ms < 0 or self.tail_s < 0:
            raise ValueError(f"overhead_ms ({self.overhead_ms:g}) and tail_s ({self.tail_s:g}) must be >= 0")
        check_inputs(self.catalog, self.apps, self.trace, self.fleet)


def check_inputs(catalog: SimCatalog, apps: list[App], trace: list[tuple[float, str]], fleet: Fleet) -> None:
    """A clear error for apps whose task the catalog lacks (or whose variants no pool of the fleet
    runs as profiled: another kind, or more threads than its cores), and for trace rows out of order
    or naming an unknown app."""
    tasks = set(catalog.tasks.values())
    for app in apps:
        if app.task not in tasks:
            raise ValueError(
                f"app {app.name}: task {app.task!r} is not in the catalog (tasks: {', '.join(sorted(tasks)) or 'none'})"
            )
        ready = [v for v in catalog.of_task(app.task) if v.status == "ready" and v.name in catalog.profiles]
        if not ready:
            raise ValueError(f"app {app.name}: task {app.task!r} has no ready, profiled variant")
        pooled = [v for v in ready if fleet.pool_for(catalog.kind_of(v.name)) is not None]
        if not pooled:
            kinds = ", ".join(sorted({catalog.kind_of(v.name) for v in ready}))
            raise ValueError(
                f"app {app.name}: the variants of task {app.task!r} run on {kinds}; the fleet has no such pool"
            )
        if all(v.threads > fleet.pool_for(catalog.kind_of(v.name)).cores for v in pooled):  # type: ignore[union-attr]
            raise ValueError(
                f"app {app.name}: no variant of task {app.task!r} runs on {fleet.cores} core(s) per worker "
                f"(the fewest threads any needs: {min(v.threads for v in pooled)}); raise --fleet cores"
            )
    known, last = {a.name for a in apps}, -math.inf
    for i, (t, name) in enumerate(trace, 2):
        if name not in known:
            raise ValueError(f"trace line {i}: unknown app {name!r} (apps: {', '.join(sorted(known))})")
        if t < last:
            raise ValueError(f"trace line {i}: time {t} comes before the previous line's {last}")
        last = t
