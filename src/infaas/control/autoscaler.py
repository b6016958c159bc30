"""The autoscaling controller: every second, read each worker's counters, keep a short window of
samples per variant, ask :func:`infaas.policy.autoscale` what to do, and do it through the cluster.

All judgement lives in the pure policy; this module only measures and acts. Every action goes to
the decision log with its reason. The loop survives any exception (logged, counted, retried on the
next tick).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infaas.control.samples import Observations, policy_round
from infaas.errors import InfaasError
from infaas.policy import Action, Sample, WorkerRoom
from infaas.policy.autoscale import capacity_rps
from infaas.policy.policies import Policy, with_min_workers
from infaas.registry.store import unreachable

if TYPE_CHECKING:
    from infaas.control.ports import Actuator
    from infaas.settings import Settings

log = logging.getLogger("infaas.autoscaler")


def _ram_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


class Autoscaler:
    def __init__(
        self, plane: Actuator, settings: Settings, policy: Policy, *, may_act: Callable[[], bool] = lambda: True
    ) -> None:
        self.plane = plane
        self.settings = settings
        cluster = plane.cluster
        # --min-workers, else the workers started (a Ray cluster starts its actors later, in start())
        self.min_workers = settings.min_workers or len(cluster.workers) or cluster.initial
        here = max(1, len(os.sched_getaffinity(0)) // cluster.cores_per_worker)  # workers this machine holds
        # a Ray cluster's own limit (its CPUs, its autoscaler) is checked by its can_add
        limit = settings.max_workers or cluster.worker_limit or here
        self.max_workers = max(self.min_workers, limit)
        self.memory_mb = settings.worker_memory_mb or 0.8 * _ram_mb() / min(self.max_workers, here)
        # whether this frontend may act now (holds the controller lease); checked before every action
        self.may_act = may_act
        self.policy = with_min_workers(policy, self.min_workers)
        self.cfg = self.policy.scaling
        self.memory = self.policy.memory()  # the policy's hysteresis, passed back each tick
        self.seen = Observations(settings.autoscale_window)  # counters, CPU times and sample windows
        self.workers: dict[str, dict[str, Any]] = {}  # latest per-worker report
        self.states: dict[str, dict[str, Any]] = {}  # latest per-variant state
        self.overloaded: dict[str, str] = {}  # variant -> why (offline jobs yield to these)
        self.ticks = 0
        self.errors = 0
        self._blocked: dict[str, float] = {}  # action key -> when it was last reported impossible
        self._retry: dict[tuple[str, str], tuple[float, int]] = {}  # (worker, variant) -> (next try, failures)
        self._task: asyncio.Task | None = None

    # ---- loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="infaas-autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        period = self.settings.autoscale_interval_s
        while True:
            began = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never dies: the next tick tries again
                self.errors += 1
                if unreachable(exc):
                    log.warning("autoscaler: the metadata store is unreachable (%s)", type(exc).__name__)
                else:
                    log.exception("autoscaler tick failed")
                self.plane.log_decision("error", f"autoscaler: {type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.05, period - (time.monotonic() - began)))

    async def tick(self) -> list[Action]:
        await self.reconcile(time.monotonic())
        await self.observe()
        actions = self.decide(time.monotonic())
        for action in actions:
            await self.apply(action)
        self.ticks += 1
        return actions

    async def reconcile(self, now: float) -> None:
        """Close the gap between each worker's target placement and its replicas: a variant that
        failed to reload after a restart (or whose load was cut off) is loaded again, with backoff
        (1, 2, 4 ... 60 s) between failed attempts, each attempt reported; never forgotten."""
        for worker in self.plane.cluster.workers:
            for spec in worker.missing():
                key = (worker.name, spec.variant)
                due, tries = self._retry.get(key, (0.0, 0))
                if now < due:
                    continue
                try:
                    await worker.load(spec, keep_target=True)
                except InfaasError as exc:
                    tries += 1
                    wait = min(60.0, 2.0 ** (tries - 1))
                    self._retry[key] = (now + wait, tries)
                    self.plane.log_decision(
                        "error",
                        f"{spec.variant} should be on {worker.name} but its load failed "
                        f"(attempt {tries}; next in {wait:g} s): {exc.message}",
                        variant=spec.variant,
                        worker=worker.name,
                    )
                else:
                    self._retry.pop(key, None)
                    self.plane.log_decision(
                        "reconcile",
                        f"{spec.variant} was missing on {worker.name} (in its target "
                        f"placement, not loaded): loaded again after {tries} failed attempt(s)",
                        variant=spec.variant,
                        worker=worker.name,
                    )
        live = {(w.name, s.variant) for w in self.plane.cluster.workers for s in w.missing()}
        for key in set(self._retry) - live:
            del self._retry[key]

    # ---- monitoring --------------------------------------------------------------------------
    async def observe(self) -> None:
        """One sample per loaded variant (summed over its replicas) from every live worker's counters."""
        workers = [w for w in self.plane.cluster.workers if w.alive]
        reports = await asyncio.gather(*(w.stats() for w in workers), return_exceptions=True)
        answered = [
            (w.name, rep) for w, rep in zip(workers, reports, strict=True) if not isinstance(rep, BaseException)
        ]
        loaded = {n for w in self.plane.cluster.workers for n in w.loaded_names()}
        cpu = self.seen.observe(answered, time.monotonic(), loaded)
        for name, rep in answered:
            self.workers[name] = {
                "cpu": cpu[name],
                "rss_mb": rep["rss_mb"],
                "budget_mb": self.memory_mb,
                "pid": rep["pid"],
                "variants": len(rep["variants"]),
            }
        for name, ps in self.seen.parts.items():
            self.states.setdefault(name, {})["offline_rps"] = sum(p["offline"] for p in ps)
            self.states[name]["p99_ms"] = max(p["p99"] for p in ps)
        for name in set(self.states) - set(self.windows):
            del self.states[name]
        for name in set(self.workers) - {w.name for w in self.plane.cluster.workers}:
            del self.workers[name]

    @property
    def windows(self) -> dict[str, deque[Sample]]:
        return self.seen.windows

    # ---- decisions ---------------------------------------------------------------------------
    def decide(self, now: float) -> list[Action]:
        catalog, workers = self.plane.catalog, self.plane.cluster.workers
        cores = self.plane.cluster.cores_per_worker
        rooms = [
            WorkerRoom(
                w.name,
                self.memory_mb - self.workers.get(w.name, {}).get("rss_mb", 0.0),
                len(w.loaded_names()),
                self.workers.get(w.name, {}).get("cpu"),
                cores,
                sum(min(s.threads, cores) * s.instances for s in w.loaded.values()),
            )
            for w in workers
            if w.alive
        ]
        r = policy_round(
            self.policy,
            self.memory,
            self.windows,
            catalog.variants,
            catalog.profiles,
            catalog.by_arch,
            self.plane.cluster.cores_per_worker,
            lambda name: tuple((w.name, w.loaded[name].instances) for w in workers if w.hosts(name)),
            rooms,
            now,
            2 * self.settings.autoscale_window * self.settings.autoscale_interval_s,
        )
        self.memory = r.memory
        for load in r.loads:
            state, why, demand = r.judged[load.variant.name]
            last = load.window[-1]
            self.states.setdefault(load.variant.name, {}).update(
                state=state,
                reason=why,
                demand_rps=round(demand, 1),
                replicas=list(load.replicas),
                instances=list(load.instances),
                capacity_rps=round(capacity_rps(load.profile, load.variant.max_batch) * load.slots, 1),
                completed_rps=round(last.completed_rps, 1),
                queue_rows=last.queue_rows,
                mean_batch=round(last.mean_batch, 2),
                p50_ms=round(last.p50_ms, 3),
                busy=round(last.busy, 3),
            )
        # the policy's own judgement (the original's flags have hysteresis) decides, and is shown
        self.overloaded = r.flagged
        for name, why in self.overloaded.items():
            if name in r.judged:
                self.states[name].update(state="overloaded", reason=why)
        return r.actions

    # ---- actions -------------------------------------------------------------------------------
    async def apply(self, action: Action) -> None:
        if not self.may_act():  # the lease was lost (or is about to expire): another frontend leads now
            log.warning(
                "not applying %s %s: this frontend no longer holds the controller lease", action.kind, action.variant
            )
            return
        plane, cluster = self.plane, self.plane.cluster
        workers = {w.name: w for w in cluster.workers}
        if action.kind == "add_worker":
            await self._add_worker(action, len(workers))
            return
        if action.kind == "remove_worker":
            if len(workers) <= self.min_workers or action.target not in workers:
                return
            if not await cluster.remove_worker(action.target, only_if_empty=True):
                return  # something was placed on it since the decision: keep it
            self.policy.worker_removed(self.memory, action.target)
            self.seen.forget_worker(action.target)
            plane.log_decision("remove_worker", action.reason, worker=action.target)
            return
        variant = plane.catalog.variants.get(action.variant)
        if variant is None:
            return
        if action.kind == "replicate":
            worker = workers.get(action.target)
            if worker is None or not worker.alive:
                return
            plane.log_decision("replicate", action.reason, variant=variant.name, worker=worker.name)
            await plane.load(variant, worker)
        elif action.kind in ("grow", "shrink"):
            worker = workers.get(action.target)
            if worker is None or not worker.hosts(variant.name):
                return
            try:
                result = await plane.resize(variant, worker, action.instances)
            except InfaasError as exc:
                plane.log_decision(
                    "error", f"{action.reason}, but the {action.kind} failed: {exc.message}", variant=variant.name
                )
                return
            plane.log_decision(
                action.kind,
                f"{action.reason} ({result['was']} -> {result['instances']} instance(s) in "
                f"{result['load_time_s'] * 1000:.0f} ms)",
                variant=variant.name,
                worker=worker.name,
            )
        elif action.kind == "unload":
            worker = workers.get(action.target)
            if worker is None or not worker.hosts(variant.name):
                return
            plane.log_decision("unload", action.reason, variant=variant.name, worker=worker.name)
            await worker.unload(variant.name)
        elif action.kind in ("upgrade", "downgrade"):
            target = plane.catalog.variants.get(action.target)
            if target is None:
                return
            await plane.swap(variant, target, action.kind, action.reason)

    async def _add_worker(self, action: Action, count: int) -> None:
        """A worker for ``action.variant`` (hosting it at once), unless at the limit (reported)."""
        plane, cluster = self.plane, self.plane.cluster
        why_not = f"already at --max-workers {self.max_workers}" if count >= self.max_workers else cluster.can_add()
        if why_not is not None:
            self._report_blocked(action, why_not)
            return
        worker = await cluster.add_worker()
        plane.log_decision(
            "add_worker",
            f"{action.reason}: started worker {worker.name} on cores {list(worker.cores)}",
            worker=worker.name,
            variant=action.variant,
        )
        variant = plane.catalog.variants.get(action.variant)
        if variant is not None:  # the worker was added for this variant: host it at once
            plane.log_decision(
                "replicate",
                f"{variant.name}: +1 replica on the new worker {worker.name}",
                variant=variant.name,
                worker=worker.name,
            )
            await plane.load(variant, worker)

    def _report_blocked(self, action: Action, why_not: str) -> None:
        key = f"{action.kind}:{action.variant}"
        now = time.monotonic()
        if now - self._blocked.get(key, -1e9) >= 30:
            self._blocked[key] = now
            self.plane.log_decision(
                "blocked", f"{action.reason}, but no worker can be added: {why_not}", variant=action.variant
            )

    def report(self) -> dict[str, Any]:
        """What ``GET /api/v1/autoscale`` and ``infaas workers`` show."""
        return {
            "enabled": True,
            "policy": self.policy.name,
            "ticks": self.ticks,
            "errors": self.errors,
            "limits": {
                "min_workers": self.min_workers,
                "max_workers": self.max_workers,
                "worker_memory_mb": round(self.memory_mb),
                "scale_down_s": self.cfg.scale_down_s,
                "idle_unload_s": self.cfg.idle_unload_s,
                "keep_warm": self.cfg.keep_warm,
            },
            "workers": self.workers,
            "variants": self.states,
        }
