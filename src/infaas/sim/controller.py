"""The simulated controller: each pool's round (its workers' reports -> the policy's actions) and the
actions applied to the simulated fleet, as :class:`~infaas.control.autoscaler.Autoscaler` applies
them to real workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infaas.control.samples import Observations, policy_round
from infaas.policy import Action, WorkerRoom
from infaas.policy.policies import Policy
from infaas.sim.fleet import Pool

if TYPE_CHECKING:
    from infaas.sim.run import Simulation


@dataclass
class PoolState:
    """One pool's controller: its policy (with the pool's floor of workers), memory and windows."""

    pool: Pool
    policy: Policy
    memory: Any
    seen: Observations


def controller_round(sim: Simulation, state: PoolState, now: float) -> None:
    """One controller round for one pool: its workers' reports, the variants it runs."""
    pool, cfg = state.pool, sim.settings
    live = [w for w in sim._live() if w.pool is pool]
    reports = [(w.name, w.report(now)) for w in live]
    cpu = state.seen.observe(reports, now, {n for w in live for n in w.hosted})
    rooms = [WorkerRoom(w.name, w.free_mb(), len(w.loaded), cpu.get(w.name), w.cores, w.threads_held()) for w in live]
    if len(sim.fleet.pools) == 1:
        variants, by_arch = sim.catalog.variants, sim.catalog.by_arch
    else:
        variants = {n: v for n, v in sim.catalog.variants.items() if sim._pool_of(v) is pool}
        by_arch = {a: [v for v in vs if v.name in variants] for a, vs in sim.catalog.by_arch.items()}
    r = policy_round(
        state.policy,
        state.memory,
        state.seen.windows,
        variants,
        sim.catalog.profiles,
        by_arch,
        pool.cores,
        lambda name: tuple((w.name, w.hosted[name].replica.instances) for w in live if w.hosts(name)),
        rooms,
        now,
        2 * cfg.autoscale_window * cfg.autoscale_interval_s,
    )
    state.memory = r.memory
    sim.flagged.update(r.flagged)
    for action in r.actions:
        apply_action(sim, state, action)


def apply_action(sim: Simulation, state: PoolState, action: Action) -> None:
    pool = state.pool
    live = {w.name: w for w in sim._live() if w.pool is pool}
    variant = sim.catalog.variants.get(action.variant)
    if action.kind == "add_worker":
        if len(live) >= pool.most:
            return sim._acted(action, "blocked")
        worker = sim._add_worker(pool)
        sim._acted(action)
        if variant is not None:
            sim._load(variant, worker)
        return
    if action.kind == "remove_worker":
        w = live.get(action.target)
        if w is None or len(live) <= pool.fewest or not w.empty():
            return
        w.removed = sim.events.now
        sim._placed += 1
        state.policy.worker_removed(state.memory, w.name)
        state.seen.forget_worker(w.name)
        return sim._acted(action)
    if variant is None:
        return
    if action.kind == "replicate":
        w = live.get(action.target)
        if w is not None and not w.hosts(variant.name):
            sim._load(variant, w)
            sim._acted(action)
    elif action.kind == "unload":
        w = live.get(action.target)
        if w is not None and w.hosts(variant.name):
            sim._unload(w, variant.name)
            sim._acted(action)
    elif action.kind in ("grow", "shrink"):
        w = live.get(action.target)
        if w is not None and w.hosts(variant.name):
            sim._resize(w, w.hosted[variant.name], action.instances)
            sim._acted(action)
    elif action.kind in ("upgrade", "downgrade"):
        target = sim.catalog.variants.get(action.target)
        if target is None:
            return
        sim._acted(action)
        for w in [w for w in live.values() if w.hosts(variant.name)]:
            if w.hosts(target.name):
                sim._unload(w, variant.name)
            else:
                sim._load(target, w, replaces=variant.name)
