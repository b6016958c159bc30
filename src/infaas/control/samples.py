"""What the controller feeds the autoscaling policy, built from worker counters with no I/O and no
clock of its own: the real controller and the simulator both call these.

- :func:`replica_rates`: one replica's rates between two reports of its counters;
- :func:`window_sample`: one :class:`~infaas.policy.Sample` per variant, summed over its replicas;
- :func:`worker_cpu`: a worker's busy share of its cores between two reports;
- :func:`variant_loads`, :func:`family_of`: the policy's view of what is loaded and what could be.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from infaas.policy import Action, Sample, VariantLoad, WorkerRoom, state_of
from infaas.policy.policies import Policy
from infaas.registry.types import Profile, Variant


def replica_rates(old: tuple[float, Mapping[str, Any]] | None, now: float, c: Mapping[str, Any]) -> dict | None:
    """Rates of one (worker, variant) replica between its report ``old`` (time, counters) and ``c`` at
    ``now``; None on a first report or after a restarted process (counters went back)."""
    if old is None or now <= old[0] or c["completed_rows"] < old[1]["completed_rows"]:
        return None
    dt, o = now - old[0], old[1]
    batches = c["batches"] - o["batches"]
    rows = c["completed_rows"] - o["completed_rows"]
    return {
        "arrival": (c["arrived_rows"] - o["arrived_rows"]) / dt,
        "turned": (c["turned_away_rows"] - o["turned_away_rows"]) / dt,
        "requests": (c["arrived_requests"] - o["arrived_requests"]) / dt,
        "turned_requests": (c["turned_away_requests"] - o["turned_away_requests"]) / dt,
        "completed": rows / dt,
        "offline": (c["offline_rows"] - o["offline_rows"]) / dt,
        "batch": rows / batches if batches else 0.0,
        "queue": c["queued_rows"],
        "p50": c["p50_ms"] or 0.0,
        "p99": c["p99_ms"] or 0.0,
        "busy": (c["busy_s"] - o["busy_s"]) / dt / max(1, c["instances"]),
        "compute": (c["busy_s"] - o["busy_s"]) / batches * 1000 if batches else 0.0,
    }


def window_sample(t: float, parts: list[dict], window: deque[Sample]) -> Sample:
    """One variant's sample at ``t`` from its replicas' rates (``parts``): rates and queues summed, the
    slowest p50 and batch compute time, the mean busy share; the batch size of the busiest replica (the
    last one when none ran)."""
    batch = max((p["batch"] for p in parts), default=0.0) or (window[-1].mean_batch if window else 1.0)
    return Sample(
        t,
        sum(p["arrival"] for p in parts),
        sum(p["completed"] for p in parts),
        batch,
        int(sum(p["queue"] for p in parts)),
        max(p["p50"] for p in parts),
        sum(p["busy"] for p in parts) / len(parts),
        max(p["compute"] for p in parts),
        sum(p["turned"] for p in parts),
        turned_share(sum(p["turned_requests"] for p in parts), sum(p["requests"] for p in parts)),
    )


def turned_share(turned: float, arrived: float) -> float:
    """The share of a variant's requests the selection turned away (of those and the arrivals)."""
    return turned / (turned + arrived) if turned > 0 else 0.0


def worker_cpu(prev: tuple[float, float] | None, now: float, cpu_s: float, cores: int) -> float | None:
    """The share of a worker's cores busy since its report ``prev`` (time, cpu seconds); None at first."""
    if prev is None or now <= prev[0] or cpu_s < prev[1]:
        return None
    return (cpu_s - prev[1]) / (now - prev[0]) / max(1, cores)


def age_out(windows: Iterable[deque[Sample]], now: float, horizon_s: float) -> None:
    """Drop samples older than ``horizon_s``: a variant whose workers stopped reporting (restarting,
    busy) is not judged on what it did a while ago."""
    for window in windows:
        while window and now - window[0].time > horizon_s:
            window.popleft()


def variant_loads(
    windows: Mapping[str, deque[Sample]],
    variants: Mapping[str, Variant],
    profiles: Mapping[str, Profile],
    hosts: Callable[[str], tuple[tuple[str, int], ...]],
) -> list[VariantLoad]:
    """The loaded, profiled variants with their replicas (``hosts``: each worker and its runtime
    instances) and recent samples (unprofiled variants are served, not scaled)."""
    loads = []
    for name, window in windows.items():
        variant, profile = variants.get(name), profiles.get(name)
        replicas = hosts(name)
        if variant is None or profile is None or not replicas or not window:
            continue
        workers, instances = zip(*replicas, strict=True)
        loads.append(VariantLoad(variant, profile, workers, tuple(window), instances))
    return loads


def family_of(
    by_arch: Mapping[str, Iterable[Variant]], profiles: Mapping[str, Profile], cores: int
) -> dict[str, list[tuple[Variant, Profile]]]:
    """Per architecture, the ready, profiled variants that fit a worker's cores: what scaling may load."""
    return {
        arch: [
            (v, profiles[v.name]) for v in variants if v.status == "ready" and v.name in profiles and v.threads <= cores
        ]
        for arch, variants in by_arch.items()
    }


class Observations:
    """What the controller remembers between reports: each replica's last counters, each worker's last
    CPU time, and a window of samples per variant. :meth:`observe` folds one round of worker reports
    into it; the real controller and the simulator both call it with the reports they have."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.windows: dict[str, deque[Sample]] = {}
        self.last: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}  # (worker, variant) -> counters
        self.cpu_at: dict[str, tuple[float, float]] = {}  # worker -> (time, cpu seconds)
        self.parts: dict[str, list[dict]] = {}  # variant -> its replicas' rates in the latest round

    def observe(
        self, reports: Iterable[tuple[str, Mapping[str, Any]]], t: float, loaded: set[str]
    ) -> dict[str, float | None]:
        """One sample per variant with rates this round (summed over its replicas) at ``t``, from
        ``reports``: (worker, report) with the report's ``time``, ``cpu_s``, ``cores`` and per-variant
        counters. Windows of variants no longer ``loaded`` are dropped. Returns each reporting
        worker's CPU share (None on its first report)."""
        self.parts = {}
        seen: set[tuple[str, str]] = set()
        cpu: dict[str, float | None] = {}
        for worker, rep in reports:
            now = rep["time"]
            cpu[worker] = worker_cpu(self.cpu_at.get(worker), now, rep["cpu_s"], rep["cores"])
            self.cpu_at[worker] = (now, rep["cpu_s"])
            for name, c in rep["variants"].items():
                key = (worker, name)
                seen.add(key)
                rates = replica_rates(self.last.get(key), now, c)
                self.last[key] = (now, c)
                if rates is not None:
                    self.parts.setdefault(name, []).append(rates)
        for key in set(self.last) - seen:
            del self.last[key]
        for name, ps in self.parts.items():
            window = self.windows.setdefault(name, deque(maxlen=self.window))
            window.append(window_sample(t, ps, window))
        for name in set(self.windows) - loaded:
            del self.windows[name]
        return cpu

    def forget_worker(self, worker: str) -> None:
        self.cpu_at.pop(worker, None)


@dataclass(frozen=True)
class Round:
    """One controller round: the policy's actions and memory, what it judged and flagged."""

    actions: list[Action]
    memory: Any
    loads: list[VariantLoad]
    judged: dict[str, tuple[str, str, float]]  # variant -> (state, why, demand rows/s)
    flagged: dict[str, str]  # variant -> why it counts as overloaded (the policy's own view)


def policy_round(
    policy: Policy,
    memory: Any,
    windows: Mapping[str, deque[Sample]],
    variants: Mapping[str, Variant],
    profiles: Mapping[str, Profile],
    by_arch: Mapping[str, Iterable[Variant]],
    cores: int,
    hosts: Callable[[str], tuple[tuple[str, int], ...]],
    rooms: list[WorkerRoom],
    now: float,
    horizon_s: float,
) -> Round:
    """Age the windows out past ``horizon_s``, build the policy's view (loads, family, rooms) and ask
    it what to do; judge each load's state and take the policy's own overload flags."""
    age_out(windows.values(), now, horizon_s)
    loads = variant_loads(windows, variants, profiles, hosts)
    family = family_of(by_arch, profiles, cores)
    actions, memory = policy.autoscale(loads, family, rooms, now, memory)
    judged = {load.variant.name: state_of(load, policy.scaling) for load in loads}
    flagged = policy.overloaded(memory, {n: (state, why) for n, (state, why, _) in judged.items()})
    return Round(actions, memory, loads, judged, flagged)
