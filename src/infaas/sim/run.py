"""One contender on one trace, on simulated time.

- ``infaas`` / ``infaas-original``: every request asks the policy (``Policy.select``, with slots from
  the router's :class:`~infaas.policy.latency.LatencyModel`); a variant not loaded is cold-started
  on the worker :func:`~infaas.policy.loaded.least_busy` names, and the request waits for its load
  (or expires). Every ``autoscale_interval_s`` the controller's round runs: worker reports ->
  :class:`~infaas.control.samples.Observations` -> :func:`~infaas.control.samples.policy_round` ->
  actions applied to the simulated fleet.
- ``static-peak`` / ``static-mean``: each app's hand-picked variant on replicas sized for the trace's
  peak or mean rate (:mod:`infaas.sim.static`), never changed; requests go to the least-busy one.

Nothing here reads the wall clock: a run is a function of its inputs and its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from infaas.control.samples import Observations
from infaas.policy import Objective, Saturated, ScopeIndex, Unreachable
from infaas.policy.latency import LatencyModel
from infaas.policy.loaded import Candidate, NoCandidate, first_choice, least_busy, select_loaded
from infaas.policy.policies import ORIGINAL, OURS, policy_named, scaling_from, with_min_workers
from infaas.registry import Variant
from infaas.settings import Settings
from infaas.sim.controller import PoolState, controller_round
from infaas.sim.engine import EventQueue, Outcome, Request, ServiceTime, SimReplica
from infaas.sim.fleet import Hosted, Pool, SimWorker
from infaas.sim.report import summarize
from infaas.sim.scenario import Scenario
from infaas.sim.static import static_fleet
from infaas.worker.batcher import preferred_batch
from infaas.workload import App

CONTENDERS = (OURS, ORIGINAL, "static-peak", "static-mean")


class Simulation:
    def __init__(self, contender: str, scenario: Scenario, progress: Callable[[int, int], None] | None = None) -> None:
        if contender not in CONTENDERS:
            raise ValueError(f"unknown contender {contender!r}: one of {', '.join(CONTENDERS)}")
        self.contender, self.catalog, self.fleet = contender, scenario.catalog, scenario.fleet
        self.apps = {a.name: a for a in scenario.apps}
        self.trace = scenario.trace
        self.settings = scenario.settings or Settings()
        self.rng = random.Random(scenario.seed)
        self.events = EventQueue()
        self.tail_s = scenario.tail_s
        self.path_s = scenario.overhead_ms / 2000  # each way
        self.progress = progress
        self.static = contender.startswith("static")
        self.workers: list[SimWorker] = []
        self.requests: list[Request] = []
        self.latency = LatencyModel()
        self.decisions: list[dict] = []  # the controller's actions (and blocked ones) with their reasons
        self.loads = self._named = 0
        self.timeline: list[tuple[float, int, int]] = []  # (t, workers, replicas) each controller round
        self.flagged: dict[str, str] = {}
        self._options: dict[str, ScopeIndex] = {}
        # _placed is bumped whenever a replica becomes ready or leaves, or a worker comes or goes
        self._placed, self._view_at = 0, -1
        self._hosting: dict[str, tuple[SimWorker, ...]] = {}  # variant -> the workers with it ready
        self._loaded: dict[str, list] = {}  # task -> its loaded options, by cost
        self.pools: list[PoolState] = []
        if not self.static:  # selection spans the pools; each pool's controller has its own floor
            self.policy = policy_named(contender, scaling_from(self.settings))
        for pool in self.fleet.pools:
            if not self.static:
                policy = with_min_workers(policy_named(contender, scaling_from(self.settings)), pool.fewest)
                self.pools.append(
                    PoolState(pool, policy, policy.memory(), Observations(self.settings.autoscale_window))
                )
            for _ in range(pool.workers):
                self._add_worker(pool)

    def _pool_of(self, v: Variant) -> Pool | None:
        return self.fleet.pool_for(self.catalog.kind_of(v.name))

    def _fits(self, v: Variant) -> bool:
        """Whether a pool runs ``v`` as profiled: its kind, and no more threads than a worker's cores."""
        pool = self._pool_of(v)
        return pool is not None and v.threads <= pool.cores

    def _hosts_for(self, v: Variant) -> list[SimWorker]:
        """The live workers ``v`` may be loaded on."""
        kind = self.catalog.kind_of(v.name)
        return [w for w in self._live() if w.pool.runs(kind)]

    # ---- the run --------------------------------------------------------------------------------
    def run(self) -> dict:
        end_of_trace = self.trace[-1][0] if self.trace else 0.0
        self.end = end_of_trace + self.tail_s
        if self.static:
            self._provision()
        else:
            self._load_all()
            self.events.at(self.settings.autoscale_interval_s, self._tick)
        self.loads_at_start = self.loads
        if self.trace:
            self.events.at(self.trace[0][0], lambda: self._arrive(0))
        self.event_count = self.events.run(until=self.end)
        self.event_count += self.events.run()  # what is still queued drains (its deadlines bound it)
        return self.summary()

    def _arrive(self, i: int) -> None:
        t, name = self.trace[i]
        if i + 1 < len(self.trace):
            self.events.at(self.trace[i + 1][0], lambda: self._arrive(i + 1))
        if self.progress is not None and (i % 500 == 0 or i + 1 == len(self.trace)):
            self.progress(i + 1, len(self.trace))
        app = self.apps[name]
        latency_ms = app.objective.get("latency_ms")
        due = t + latency_ms / 1000 if latency_ms is not None else None
        # the server's deadline: the objective's, or the default for an explicit-variant (static) request
        server = due if due is not None and not self.static else t + self.settings.default_timeout_s
        req = Request(arrival=t, rows=1, deadline=server, app=name, due=due)
        self.requests.append(req)
        if self.static:
            self._route_static(req, app)
        else:
            self._route_objective(req, app)

    # ---- routing ----------------------------------------------------------------------------------
    def _live(self) -> list[SimWorker]:
        return [w for w in self.workers if w.removed is None]

    def _view(self) -> dict[str, tuple[SimWorker, ...]]:
        """Which workers have each variant ready; rebuilt when the placement changed (as the router's)."""
        if self._view_at != self._placed:
            hosting: dict[str, list[SimWorker]] = {}
            for w in self._live():
                for name, h in w.hosted.items():
                    if h.state == "ready":
                        hosting.setdefault(name, []).append(w)
            self._hosting = {n: tuple(ws) for n, ws in hosting.items()}
            self._loaded = {}
            self._view_at = self._placed
        return self._hosting

    def _route_objective(self, req: Request, app: App) -> None:
        o = app.objective
        objective = Objective(o.get("latency_ms"), o.get("min_accuracy"), o.get("max_cost"))
        index = self._options.get(app.task)
        if index is None:
            index = self._options[app.task] = self.catalog.options(app.task, self._fits)
        hosting = self._view()
        loaded = self._loaded.get(app.task)
        if loaded is None:
            loaded = self._loaded[app.task] = [opt for opt in index.ordered if opt.variant.name in hosting]
        seen: dict[str, tuple[dict[str, int], dict[str, float]]] = {}  # per worker, once per request

        def slot(w: SimWorker, name: str):
            if not self.policy.reads_slots:  # (worker, rows in flight) is all it reads
                return w.name, w.hosted[name].replica.in_flight_rows
            rows, drains = seen.get(w.name) or seen.setdefault(w.name, (w.in_flight(), {}))
            return self.latency.slot(
                w.name, name, rows, self.catalog.profiles, self.catalog.variants, drains, now=self.events.now
            )

        def slots(name: str):
            return tuple(slot(w, name) for w in hosting.get(name, ()))

        try:
            choice = self.policy.select(objective, loaded, index, 1, f"task {app.task}", slots, self.flagged)
        except Saturated as exc:
            host = next((w for w in hosting.get(exc.variant or "", ()) if w.name == exc.worker), None)
            if host is not None:  # its demand, as a frontend tells the worker
                replica = host.hosted[exc.variant].replica
                replica.turned_away_requests += 1
                replica.turned_away_rows += 1
            return self._fail(req, "refused", "dropped")
        except Unreachable:
            return self._fail(req, "unreachable", "unmeetable")
        req.variant, req.predicted_ms = choice.variant.name, choice.predicted_ms
        req.learn = choice.worker is not None and self.policy.learns_latency
        if choice.worker is None:
            self._cold(req, choice.variant)
        else:
            worker = next(w for w in hosting[choice.variant.name] if w.name == choice.worker)
            req.worker = worker.name
            self._send(worker.hosted[choice.variant.name].replica, req)
            if choice.prefetch is not None and not self._anywhere(choice.prefetch.name):
                self._load(choice.prefetch, least_busy(self._hosts_for(choice.prefetch)))

    def _route_static(self, req: Request, app: App) -> None:
        name = self.plan[app.name][0]
        hosts = tuple((w.name, w.outstanding(name)) for w in self._view().get(name, ()))
        try:
            decision = select_loaded([Candidate(self.catalog.variants[name], hosts)], 1, f"variant {name}")
        except NoCandidate:
            return self._fail(req, "refused", "dropped")
        worker = next(w for w in self.workers if w.name == decision.worker)
        req.variant, req.worker = name, worker.name
        self._send(worker.hosted[name].replica, req)

    def _send(self, replica: SimReplica, req: Request) -> None:
        """To the worker: after the serving path's inbound half (door, router, wire), when modelled."""
        if self.path_s:
            self.events.after(self.path_s, lambda: replica.enqueue(req))
        else:
            replica.enqueue(req)

    def _fail(self, req: Request, status: str, violation: str) -> None:
        req.status, req.finished, req.violation = status, self.events.now, violation

    def _anywhere(self, name: str) -> bool:
        return any(name in w.hosted and w.hosted[name].state != "draining" for w in self._live())

    def _cold(self, req: Request, variant: Variant) -> None:
        """Wait for ``variant``'s load (one per variant, however many requests wait for it)."""
        for w in self._live():
            h = w.hosted.get(variant.name)
            if h is not None and h.state == "loading":
                req.worker = w.name
                h.held.append(req)
                return
        worker = least_busy(self._hosts_for(variant))
        req.worker = worker.name
        self._load(variant, worker).held.append(req)

    # ---- placement on the simulated fleet -----------------------------------------------------------
    def _add_worker(self, pool: Pool) -> SimWorker:
        self._named += 1
        w = SimWorker(f"w{self._named}", pool, self.events.now)
        self._placed += 1
        self.workers.append(w)
        return w

    def _load(
        self, variant: Variant, worker: SimWorker, *, at_once: bool = False, replaces: str | None = None
    ) -> Hosted:
        existing = worker.hosted.get(variant.name)
        if existing is not None:
            if existing.state == "draining":  # taken back: it serves again
                existing.state = "ready"
                self._placed += 1
            return existing
        profile = self.catalog.profiles[variant.name]
        service = ServiceTime.of_profile(profile, variant.max_batch)
        batch = preferred_batch({b: p50 / 1000 for b, (p50, _) in service.table.items()}, variant.max_batch)
        instances = max(1, self.settings.instances_per_variant)
        replica = SimReplica(
            self.events,
            service,
            self.rng,
            max_batch=batch,
            max_delay_s=self.settings.max_queue_delay_us / 1e6,
            instances=instances,
            admission=self.settings.admission_control,
            max_wait_s=self.settings.request_timeout_s,
            outcomes=None,
            speed=lambda w=worker, t=variant.threads: w.speed(t),
            done=lambda outs, w=worker, v=variant: self._done(w, v, outs),
        )
        ready_at = self.events.now + (0.0 if at_once else profile.load_time_ms / 1000)
        h = worker.hosted[variant.name] = Hosted(
            variant, profile, replica, "loading", ready_at, replaces=replaces, instances=instances
        )
        self.loads += 1
        if at_once:
            self._ready(worker, h, batch, instances)
        else:
            self.events.at(ready_at, lambda: self._ready(worker, h, batch, instances))
        return h

    def _ready(self, worker: SimWorker, h: Hosted, batch: int, instances: int) -> None:
        if worker.hosted.get(h.variant.name) is not h:
            return
        h.state = "ready"
        self._placed += 1
        self.latency.loaded(worker.name, h.variant.name, batch, instances)
        held, h.held = h.held, []
        now = self.events.now
        for req in held:
            if req.deadline is not None and req.deadline <= now:
                self._fail(req, "expired", "late")
            else:
                h.replica.enqueue(req)
        if h.replaces is not None:
            self._unload(worker, h.replaces)

    def _resize(self, worker: SimWorker, h: Hosted, instances: int) -> None:
        """Fewer instances at once (a running batch finishes); more serve once they have loaded."""

        def apply() -> None:
            if worker.hosted.get(h.variant.name) is h and h.state == "ready":
                h.replica.resize(instances)
                self.latency.resized(worker.name, h.variant.name, instances)

        grows = instances > h.instances
        h.instances = instances  # memory and cores held from now (loading ones too)
        if grows:
            self.events.after(h.profile.load_time_ms / 1000, apply)
        else:
            apply()

    def _unload(self, worker: SimWorker, name: str) -> None:
        h = worker.hosted.get(name)
        if h is None:
            return
        h.state = "draining"
        self._placed += 1
        self._retire_if_drained(worker, h)

    def _retire_if_drained(self, worker: SimWorker, h: Hosted) -> None:
        if h.state == "draining" and not h.held and h.replica.in_flight_rows == 0:
            worker.retire(h.variant.name)
            self._placed += 1

    def _done(self, worker: SimWorker, variant: Variant, outs: list[Outcome]) -> None:
        profile = self.catalog.profiles[variant.name]
        for out in outs:
            req = out if isinstance(out, Request) else None
            if req is None:
                continue
            if req.status == "refused":
                req.violation = "dropped"
            elif req.status == "expired":
                req.violation = "late"
            elif req.status == "served":
                compute_ms = (req.finished - req.started) * 1000
                req.finished += self.path_s  # the answer's way back
                req.violation = self._judge(req, variant)
                if not self.static:
                    self.latency.answered(
                        (worker.name, variant.name),
                        total_ms=(req.finished - req.arrival) * 1000,
                        queue_ms=(req.started - req.arrival) * 1000,
                        compute_ms=compute_ms,
                        batch_size=req.batch_size,
                        predicted_ms=req.predicted_ms,
                        from_slot=req.learn,
                        alone=not any(n != variant.name and r for n, r in worker.in_flight().items()),
                        profile=profile,
                        now=self.events.now,
                    )
        h = worker.hosted.get(variant.name)
        if h is not None:
            self._retire_if_drained(worker, h)

    def _judge(self, req: Request, variant: Variant) -> str | None:
        floor = self.apps[req.app].objective.get("min_accuracy")
        if floor is not None and (variant.accuracy is None or variant.accuracy < floor):
            return "under_accuracy"
        if req.due is not None and req.finished is not None and req.finished > req.due:
            return "late"
        return None

    def _load_all(self) -> None:
        """At start, as the server does: each architecture's default variant on the least-busy worker
        (only the architectures of the apps' tasks: one no app asks for would only sit in memory)."""
        tasks = {a.task for a in self.apps.values()}
        for arch, variants in sorted(self.catalog.by_arch.items()):
            if self.catalog.tasks.get(arch) not in tasks:
                continue
            ready = [v for v in variants if v.name in self.catalog.profiles and self._fits(v)]
            variant = first_choice(ready, self.catalog.profiles, self.fleet.cores)
            if variant is not None:
                self._load(variant, least_busy(self._hosts_for(variant)), at_once=True)

    # ---- static provisioning ----------------------------------------------------------------------------
    def _provision(self) -> None:
        """Each app's hand-picked variant, on replicas sized for the trace, in the pool that runs it."""
        sizing = "peak" if self.contender == "static-peak" else "mean"
        self.plan, layout = static_fleet(sizing, self.catalog, list(self.apps.values()), self.trace, self.fleet)
        self.workers = []
        for pool, workers, wanted in layout:
            here = [self._add_worker(pool) for _ in range(workers)]
            for name, replicas in sorted(wanted.items()):
                for worker in sorted(here, key=lambda w: (len(w.hosted), w.name))[:replicas]:
                    self._load(self.catalog.variants[name], worker, at_once=True)

    # ---- the controller ------------------------------------------------------------------------------
    def _tick(self) -> None:
        now, cfg = self.events.now, self.settings
        self.flagged = {}
        for state in self.pools:
            controller_round(self, state, now)
        live = self._live()
        self.timeline.append((round(now, 6), len(live), sum(len(w.hosted) for w in live)))
        if now + cfg.autoscale_interval_s <= self.end:
            self.events.after(cfg.autoscale_interval_s, self._tick)

    def _acted(self, action, kind: str = "") -> None:
        entry = {"t": round(self.events.now, 3), "kind": kind or action.kind, "variant": action.variant}
        self.decisions.append({**entry, "target": action.target, "reason": action.reason})

    def summary(self) -> dict:
        return summarize(self)
