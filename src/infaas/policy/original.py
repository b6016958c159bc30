"""The original INFaaS policy, as a contender behind the same pure interfaces as ours.

Selected with ``--policy infaas-original`` (setting ``policy``). The selection has the signature of
:func:`infaas.policy.select.select_sorted` plus the set of variants flagged overloaded; the
autoscaler has the signature of :func:`infaas.policy.autoscale.autoscale` with its own memory.
Like ours, nothing here reads a clock or does I/O.

Each rule below names its source: [paper] Romero et al., "INFaaS: Automated Model-less Inference
Serving", USENIX ATC 2021; [code] the public C++ implementation (stanford-mast/INFaaS:
``src/master/queryfe_server.cc`` for selection, ``src/worker/autoscaler.cc`` and
``src/master/modelreg_server.cc`` for scaling), as summarised in ``shared/INFAAS.md``. Where the
original is silent or its rule needs hardware we do not have (GPU constants, the 100 ms CPU/GPU
cut-off), the choice made here is marked [ours].

Selection, per query:
- candidates meet the accuracy floor and take the batch, and their predicted latency — the
  profile's linear fit ``slope * rows + intercept``, with no queue term — is within the latency
  objective [paper §4.1, code]; ``max_cost`` is not used (the code parses it and ignores it);
- among the *running* candidates not flagged overloaded, the one with the **least slack** (the
  slowest that still meets the objective: a proxy for the cheapest hardware) [paper §4.1], then
  its worker with the fewest rows in flight (the code picks the lowest QPS of up to three
  workers; rows in flight are what we have per worker) [code];
- if none runs: the candidate with the smallest max batch (the code's proxy for the cheapest
  hardware), then the least slack, loaded on the least-utilised worker **in the request path**:
  the query pays the cold start, whose load time is not checked against the objective [code];
- if every candidate runs but all are flagged: the least-slack one is still used (the original
  queues onto it) [code].

Model-level autoscaling, per variant, every controller tick (1 s) [code, worker autoscaler]:
- ``L = slope * avg_batch + intercept``; **overloaded** when (latency > 2.5 L and rows/s >
  0.5 * 1000 / L) or rows outstanding > 0.8 * replicas * 1000 / L; the flag is cleared only when
  the backlog is below that bound and latency < 1.5 L. (The worker reports a p50 per variant, used
  as its average latency [ours].)
- capacity per replica ``1000 / L(B) * B`` at the average batch B, 5 % headroom on CPU; replicas
  needed = ceil(demand / capacity) - replicas, at least one while flagged;
- replicate (a) vs upgrade to the fastest variant of the architecture that is at least as
  accurate (b), by **load-time cost**: a = replicas needed x the variant's load time, b = the
  faster variant's load time; (b) when a > 1.5 b or (a) is infeasible (no worker with the memory);
  neither: ask for a worker [code, modelreg];
- a scale-up is not repeated for ``cooldown_s`` (ours: 3 s, the same as our policy, so the
  replica being loaded is not asked for again) [ours];
- scale down after 10 consecutive low checks: one replica fewer when the demand fits in the
  others; a variant with no requests for 10 checks is unloaded, except an architecture's last one
  when ``keep_warm`` (as ours) [code: 10 checks on CPU; the idle unload is ours]. No downgrade on
  CPU (the original downgrades GPU variants only) [code].

Worker-level autoscaling, every 2 s [code, master]: add a worker when every worker is above 80 %
CPU, or when a flagged variant has no worker to replicate to; then back off 30 s. The original
never removes CPU workers, and neither does this policy [code].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from infaas.policy.scaling import Action, VariantLoad, WorkerRoom, every_worker_above
from infaas.policy.select import (
    Choice,
    Objective,
    Option,
    ScopeIndex,
    Slot,
    Unreachable,
    _objective_text,
    _why_not,
)
from infaas.registry.types import Profile, Variant, linear_fit

NAME = "infaas-original"


@dataclass(frozen=True)
class OriginalConfig:
    overload_latency: float = 2.5  # [code] avg latency > 2.5 L ...
    overload_rate: float = 0.5  # ... and QPS > 0.5 * 1000 / L
    overload_backlog: float = 0.8  # [code] or outstanding > 0.8 * replicas * 1000 / L
    clear_latency: float = 1.5  # [code] cleared below 1.5 L (and the backlog bound)
    headroom: float = 0.05  # [code] CPU keeps 5 % of capacity spare
    upgrade_margin: float = 1.5  # [code] upgrade when replicating costs 1.5x the upgrade's load time
    low_checks: int = 10  # [code] consecutive low checks before a CPU scale-down
    cooldown_s: float = 3.0  # [ours] do not ask again for the replica being loaded
    keep_warm: bool = True  # [ours] as our policy: an idle architecture keeps one variant
    worker_busy: float = 0.8  # [code] every worker above 80 % -> scale out
    worker_check_s: float = 2.0  # [code] worker-level checks every 2 s
    worker_backoff_s: float = 30.0  # [code] ~30 s after adding a worker


@dataclass
class OriginalMemory:
    flagged: dict[str, str] = field(default_factory=dict)  # variant -> why it is overloaded
    low_checks: dict[str, int] = field(default_factory=dict)
    idle_checks: dict[str, int] = field(default_factory=dict)
    scaled_at: dict[str, float] = field(default_factory=dict)
    worker_checked_at: float | None = None
    added_at: float | None = None


def fit_ms(p: Profile, batch: float) -> float:
    """The original's latency model: a least-squares line through the p50s measured at batches 1,
    4 and 8 [code: profiler], or the profile's own fit when those were not all measured; floored
    at 1 us so rates stay finite (the original does not floor it)."""
    slope, intercept = _line(p)
    return max(slope * batch + intercept, 1e-3)


def _line(p: Profile) -> tuple[float, float]:
    table = p.latency_p50_ms or {}
    if not all(b in table for b in (1, 4, 8)):
        return p.fit_slope_ms, p.fit_intercept_ms
    return linear_fit([1, 4, 8], [table[1], table[4], table[8]])


# ---- selection ---------------------------------------------------------------------------------
def select_original(
    objective: Objective,
    loaded: list[Option],
    index: ScopeIndex,
    rows: int,
    scope: str,
    live: Callable[[str], tuple[Slot, ...] | None],
    flagged: Collection[str] = (),
) -> Choice:
    lat, floor = objective.latency_ms, objective.min_accuracy

    def admissible(o: Option) -> bool:
        v = o.variant
        if v.max_batch < rows or v.status != "ready" or o.profile is None:
            return False
        if floor is not None and (
            v.accuracy is None
            or v.accuracy < floor
            or (v.accuracy_source == "estimated" and not objective.allow_estimated)
        ):
            return False
        return lat is None or fit_ms(o.profile, rows) <= lat

    # slowest first (max() over the same list would keep the first of equals; a stable sort does
    # too); a variant's slots are looked up only when the scan reaches it, not for every one loaded
    ranked = sorted((o for o in loaded if admissible(o)), key=lambda o: -fit_ms(o.profile, rows))
    seen: dict[str, tuple[Slot, ...] | None] = {}

    def slots_of(o: Option) -> tuple[Slot, ...] | None:
        name = o.variant.name
        if name not in seen:
            seen[name] = live(name)
        return seen[name]

    o = next((o for o in ranked if o.variant.name not in flagged and slots_of(o)), None)
    if o is not None:
        return _pick(o, slots_of(o), rows, scope, "the running variant with the least slack")
    running = next((o for o in ranked if slots_of(o)), None)  # every running one is flagged
    hosted = {o.variant.name for o in loaded}
    cold = [o for o in index.ordered if o.variant.name not in hosted and admissible(o)]
    if cold:
        o = min(cold, key=lambda x: (x.variant.max_batch, -fit_ms(x.profile, rows)))
        pred = fit_ms(o.profile, rows)
        why = "every running one is overloaded" if running is not None else "none runs"
        return Choice(
            o.variant,
            None,
            pred,
            o.profile.cost_per_1k,
            (
                f"{scope} (infaas-original): {o.variant.name} meets {_objective_text(objective)} and {why}: the "
                f"smallest max batch ({o.variant.max_batch}), predicted {pred:.2f} ms by the linear fit; "
                f"cold start in the request path ({o.profile.load_time_ms:.0f} ms to load, not counted)"
            ),
        )
    if running is not None:
        return _pick(running, slots_of(running), rows, scope, "overloaded, but the only kind that meets the objective")
    fitting = [o for o in index.ordered if o.variant.max_batch >= rows and o.variant.status == "ready"]
    if not fitting:
        raise Unreachable(f"{scope}: no ready variant takes a batch of {rows}")
    raise Unreachable(_why_not(objective, fitting, scope, rows, live))


def _pick(o: Option, slots: tuple[Slot, ...], rows: int, scope: str, what: str) -> Choice:
    worker, in_flight = min(((s[0], s[1]) for s in slots), key=lambda s: s[1])
    pred = fit_ms(o.profile, rows)
    return Choice(
        o.variant,
        worker,
        pred,
        o.profile.cost_per_1k,
        (
            f"{scope} (infaas-original): {o.variant.name} is {what} (linear fit {pred:.2f} ms); worker {worker} "
            f"has the fewest rows in flight ({in_flight})"
        ),
    )


# ---- autoscaling -------------------------------------------------------------------------------
def autoscale_original(
    loads: list[VariantLoad],
    family: dict[str, list[tuple[Variant, Profile]]],
    rooms: list[WorkerRoom],
    now: float,
    memory: OriginalMemory,
    cfg: OriginalConfig = OriginalConfig(),
) -> tuple[list[Action], OriginalMemory]:
    actions: list[Action] = []
    flagged: dict[str, str] = {}
    low, idle = dict(memory.low_checks), dict(memory.idle_checks)
    scaled_at = {k: t for k, t in memory.scaled_at.items() if now - t < cfg.cooldown_s}
    free = {r.name: r.free_mb for r in rooms}
    per_arch: dict[str, int] = {}
    for load in loads:
        per_arch[load.variant.architecture] = per_arch.get(load.variant.architecture, 0) + 1
    stuck = False  # a flagged variant with nowhere to replicate
    for load in loads:
        v, p, n = load.variant, load.profile, len(load.replicas)
        last = load.window[-1]
        batch = max(1.0, last.mean_batch)
        L = fit_ms(p, batch)
        rate = 1000 / L
        backlog_bound = cfg.overload_backlog * n * rate
        hot = (
            last.p50_ms > cfg.overload_latency * L and last.arrival_rps > cfg.overload_rate * rate
        ) or last.queue_rows > backlog_bound
        was = memory.flagged.get(v.name)
        cleared = last.queue_rows <= backlog_bound and last.p50_ms < cfg.clear_latency * L
        if hot or (was is not None and not cleared):
            why = (
                f"p50 {last.p50_ms:.1f} ms vs L {L:.1f} ms at batch {batch:.1f}, {last.arrival_rps:.0f} rows/s, "
                f"{last.queue_rows} rows outstanding (bound {backlog_bound:.0f})"
            )
            flagged[v.name] = why
            low.pop(v.name, None)
            idle.pop(v.name, None)
            if v.name in scaled_at:
                continue
            ups = _scale_up(load, L, batch, family.get(v.architecture, []), free, why, cfg)
            if ups[0].kind == "add_worker":
                stuck = True
                continue
            actions.extend(ups)
            scaled_at[v.name] = now
            for a in ups:
                if a.kind == "replicate":
                    free[a.target] -= p.peak_memory_mb
                else:
                    scaled_at[a.target] = now
            continue
        _scale_down(load, L, batch, low, idle, per_arch, cfg, actions)
    checked, added = _worker_check(loads, rooms, flagged, stuck, now, memory, cfg, actions)
    return actions, OriginalMemory(flagged, low, idle, scaled_at, checked, added)


def _scale_down(
    load: VariantLoad,
    L: float,
    batch: float,
    low: dict[str, int],
    idle: dict[str, int],
    per_arch: dict[str, int],
    cfg: OriginalConfig,
    actions: list[Action],
) -> None:
    """[code] A replica goes after ``low_checks`` consecutive checks whose demand fitted in one
    fewer; an idle variant's last replica after as many idle checks (unless it keeps its
    architecture warm). Appends to ``actions``; counts in ``low`` and ``idle``."""
    v, n = load.variant, len(load.replicas)
    demand = load.window[-1].arrival_rps
    if demand == 0:
        idle[v.name] = idle.get(v.name, 0) + 1
    else:
        idle.pop(v.name, None)
    cap = 1000 / L * batch * (1 - cfg.headroom)
    if n > 1 and demand <= cap * (n - 1):
        low[v.name] = low.get(v.name, 0) + 1
    else:
        low.pop(v.name, None)
    if low.get(v.name, 0) >= cfg.low_checks:
        actions.append(
            Action(
                "unload",
                v.name,
                load.replicas[-1],
                (
                    f"{v.name} (infaas-original): demand {demand:.0f} rows/s fitted in {n - 1} replica(s) for "
                    f"{cfg.low_checks} consecutive checks"
                ),
            )
        )
        low.pop(v.name)
    elif idle.get(v.name, 0) >= cfg.low_checks and n == 1:
        if not (cfg.keep_warm and per_arch[v.architecture] == 1):
            actions.append(
                Action(
                    "unload",
                    v.name,
                    load.replicas[0],
                    (f"{v.name} (infaas-original): no requests for {cfg.low_checks} consecutive checks"),
                )
            )
            per_arch[v.architecture] -= 1
        idle.pop(v.name)


def _worker_check(
    loads: list[VariantLoad],
    rooms: list[WorkerRoom],
    flagged: dict[str, str],
    stuck: bool,
    now: float,
    memory: OriginalMemory,
    cfg: OriginalConfig,
    actions: list[Action],
) -> tuple[float | None, float | None]:
    """[code] Every ``worker_check_s``: a worker is added when every worker is busy, or a flagged
    variant has nowhere to replicate, then not again for ``worker_backoff_s``. Appends to
    ``actions``; returns (last checked, last added)."""
    checked, added = memory.worker_checked_at, memory.added_at
    if checked is None or now - checked >= cfg.worker_check_s:
        checked = now
        busy = bool(every_worker_above(rooms, cfg.worker_busy))
        if (busy or stuck) and (added is None or now - added >= cfg.worker_backoff_s) and loads:
            target = next((n for n in flagged), max(loads, key=lambda x: x.window[-1].busy).variant.name)
            why = (
                f"every worker above {cfg.worker_busy:.0%} CPU"
                if busy
                else f"{target} is overloaded and no worker has room for a replica"
            )
            actions.append(Action("add_worker", target, "cpu", f"infaas-original: {why}"))
            added = now
    return checked, added


def _scale_up(
    load: VariantLoad,
    L: float,
    batch: float,
    family: list[tuple[Variant, Profile]],
    free: dict[str, float],
    why: str,
    cfg: OriginalConfig,
) -> list[Action]:
    v, p, n = load.variant, load.profile, len(load.replicas)
    demand = max(s.arrival_rps for s in load.window[-2:])
    cap = 1000 / L * batch * (1 - cfg.headroom)
    needed = max(1, math.ceil(demand / cap) - n)
    hosts = [
        w for w, mb in sorted(free.items(), key=lambda kv: -kv[1]) if w not in load.replicas and mb >= p.peak_memory_mb
    ]
    replicate_ok = len(hosts) >= needed
    cost_a = needed * p.load_time_ms
    faster = [
        (c, cp)
        for c, cp in family
        if c.name != v.name
        and c.status == "ready"
        and (c.accuracy or 0) >= (v.accuracy or 0)
        and c.max_batch >= v.max_batch
        and fit_ms(cp, batch) < L
    ]
    up = min(faster, key=lambda x: fit_ms(x[1], batch)) if faster else None
    if up is not None and (not replicate_ok or cost_a > cfg.upgrade_margin * up[1].load_time_ms):
        return [
            Action(
                "upgrade",
                v.name,
                up[0].name,
                (
                    f"{v.name} overloaded (infaas-original: {why}); upgrade to the fastest, {up[0].name} "
                    f"(loads in {up[1].load_time_ms:.0f} ms vs {needed} replica(s) x {p.load_time_ms:.0f} ms"
                    f"{'' if replicate_ok else ', and no room to replicate'})"
                ),
            )
        ]
    if not hosts:
        return [Action("add_worker", v.name, "cpu", f"{v.name} overloaded ({why}) and no worker has room")]
    return [
        Action(
            "replicate",
            v.name,
            w,
            (
                f"{v.name} overloaded (infaas-original: {why}); {needed} more replica(s) needed "
                f"(loads {cost_a:.0f} ms in all{'' if up is None else f' vs {up[1].load_time_ms:.0f} ms for {up[0].name}'})"
            ),
        )
        for w in hosts[:needed]
    ]
