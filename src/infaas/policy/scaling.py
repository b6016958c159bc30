"""What the autoscaling policies read and emit: a variant's load (its replicas, their runtime
instances and a window of samples), a worker's room, the actions, the knobs and the hysteresis
memory; a replica's capacity and a variant's state (INFaaS's inactive / overloaded / interfered /
active). Pure data and arithmetic: the policies in :mod:`infaas.policy.autoscale` and
:mod:`infaas.policy.original` build on them."""

from __future__ import annotations

from dataclasses import dataclass, field

from infaas.registry.types import Profile, Variant


@dataclass(frozen=True, slots=True)
class Sample:
    """One report for one variant, summed over its replicas."""

    time: float
    arrival_rps: float  # rows per second that arrived
    completed_rps: float
    mean_batch: float
    queue_rows: int
    p50_ms: float
    busy: float = 0.0  # fraction of the replicas' time spent computing
    compute_ms: float = 0.0  # mean time a batch computed (0: not reported; then p50 is judged)
    # rows per second the selection refused (429) because these replicas were busy: demand too; and
    # the share of requests that was (of those and the arrivals: a tight objective's 1-row
    # requests beside another app's large ones count as requests, not as rows)
    turned_away_rps: float = 0.0
    turned_away_share: float = 0.0


@dataclass(frozen=True, slots=True)
class VariantLoad:
    variant: Variant
    profile: Profile
    replicas: tuple[str, ...]  # workers hosting it
    window: tuple[Sample, ...]
    instances: tuple[int, ...] = ()  # runtime instances of each replica, sharing its queue (empty: one each)

    @property
    def slots(self) -> int:
        """Runtime instances over all replicas: what its capacity is counted in."""
        return sum(self.instances) if self.instances else len(self.replicas)

    def instances_on(self, worker: str) -> int:
        return self.instances[self.replicas.index(worker)] if self.instances else 1

    def carried(self) -> str:
        """ "3 replica(s)", or "5 instance(s) on 3 replica(s)" when some replica runs several."""
        n = len(self.replicas)
        return f"{n} replica(s)" if self.slots == n else f"{self.slots} instance(s) on {n} replica(s)"


@dataclass(frozen=True, slots=True)
class WorkerRoom:
    """A worker's free memory for one more variant, and how many variants it hosts."""

    name: str
    free_mb: float
    variants: int = 1
    cpu: float | None = None  # share of its cores busy over the last interval (None: not measured yet)
    cores: int = 0  # its cores (0: not said; then no variant grows instances there)
    threads: int = 0  # threads its hosted variants' runtime instances hold


# what scaling does (the decision log's kinds for it), as the policies and benchmarks count it
SCALING_KINDS = ("replicate", "grow", "shrink", "upgrade", "downgrade", "unload", "add_worker", "remove_worker")


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # replicate | grow | shrink | upgrade | downgrade | unload | add_worker | remove_worker
    variant: str
    target: str  # a worker (replicate, grow, shrink, unload) or a variant (upgrade, downgrade)
    reason: str
    instances: int = 0  # grow, shrink: the replica's runtime instances after the action


@dataclass(frozen=True)
class ScalingConfig:
    headroom: float = 0.05  # keep 5 % of a replica's capacity spare (INFaaS: CPU)
    interference_factor: float = 1.5
    low_fraction: float = 0.5  # "low" when demand fits in half of one replica fewer
    scale_down_s: float = 10.0
    load_time_factor: float = 5.0  # ... or this many times the variant's load time, if longer
    idle_unload_s: float = 60.0
    upgrade_ratio: float = 1.0  # upgrade when replicating leaves a placement this many times dearer
    # an upgrade swaps (a reload, a cold replica): it must carry this many times what runs now, more
    # than the profiles' noise (two 1-thread instances and the 2-thread form differ by a few %)
    upgrade_gain: float = 1.2
    max_scale_load_s: float = 30.0  # a scale-up must load within this (else the soonest relief wins)
    cooldown_s: float = 3.0  # after scaling a variant up, let the window see the effect first
    fast_samples: int = 2  # overload is judged on the newest samples (react fast), low load on all
    keep_warm: bool = True  # an idle architecture keeps one replica of one variant loaded
    min_workers: int = 1
    # worker level (INFaaS: scale out when every worker is above 80 % utilisation): variants that
    # share a worker each look within capacity while together they saturate its cores
    worker_busy: float = 0.8
    worker_cool: float = 0.5  # a worker under this has CPU to take a replica of a variant on a hot one
    spread_busy: float = 0.1  # ... if that variant computes at least this share of its replicas' time
    scale_out_s: float = 2.0  # every worker hot this long -> add one
    worker_cooldown_s: float = 10.0  # after adding a worker, let the load spread before adding another
    # a replica on a worker with idle cores grows runtime instances (sharing its queue, as Triton's
    # instance groups do) before the variant takes a replica elsewhere; scale-down shrinks them first
    grow: bool = True
    # empty a lightly used worker (its work fits on the others below worker_cool CPU for this long)
    # so that scale-in can remove it (infaas.policy.consolidate)
    consolidate: bool = True
    consolidate_s: float = 30.0
    # requests the selection refused because the variant's replicas were busy (429, saturated) are
    # demand: over this share of its requests in the newest samples, the variant is overloaded
    # whatever its throughput says (an objective with no room to batch or queue caps a replica)
    turned_away_share: float = 0.05
    # ... and, for this long, keeps one replica more than the count that turned requests away while
    # its demand stays above half of what it was then
    turned_away_hold_s: float = 300.0


@dataclass
class Memory:
    """Hysteresis: since when each variant's load (each worker) has looked low (empty); when each
    variant was last scaled up."""

    low_since: dict[str, float] = field(default_factory=dict)
    empty_since: dict[str, float] = field(default_factory=dict)
    scaled_at: dict[str, float] = field(default_factory=dict)
    hot_since: float | None = None  # since when every worker has been above worker_busy
    added_at: float | None = None  # when a worker was last added for CPU
    drain: str | None = None  # the worker being emptied (consolidation)
    cool_since: float | None = None  # since when the fleet could do without one of its workers
    # variant -> (when it last turned requests away, its instances and demand in rows/s then)
    short: dict[str, tuple[float, int, float]] = field(default_factory=dict)


def every_worker_above(rooms: list[WorkerRoom], threshold: float) -> list[WorkerRoom]:
    """The workers, when every one is measured and above ``threshold`` CPU; else none (a worker
    not measured yet, or one with room, means no scale-out). INFaaS's worker-level rule."""
    measured = [r for r in rooms if r.cpu is not None]
    if measured and len(measured) == len(rooms) and all(r.cpu >= threshold for r in measured):
        return measured
    return []


def capacity_rps(profile: Profile, max_batch: int) -> float:
    """Rows per second one replica sustains at its best batch (within its max batch)."""
    batch = max(1, min(profile.best_batch or max_batch, max_batch))
    ms = profile.predict_ms(batch)
    return batch / ms * 1000 if ms > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Pressure:
    """A loaded variant's load over the newest samples (scale-up reads these; scale-down the window)."""

    share: float  # of its requests the selection turned away (its replicas too busy)
    turned: float  # those rows per second
    surge: float  # all its demand, rows/s: the arrivals and those turned away
    cap: float  # what its instances sustain, less the headroom
    growing: bool  # its queue kept growing over the window
    busy: float  # share of its instances' time computing

    def saturated(self, cfg: ScalingConfig) -> bool:
        """Short of throughput: demand over capacity, a growing queue or instances computing nearly all the time."""
        return self.surge > self.cap or self.growing or self.busy > 1 - cfg.headroom


def pressure(load: VariantLoad, cfg: ScalingConfig) -> Pressure:
    recent = load.window[-cfg.fast_samples :]
    n = max(1, len(recent))
    turned = sum(s.turned_away_rps for s in recent) / n
    first, last = load.window[0], load.window[-1]
    return Pressure(
        sum(s.turned_away_share for s in recent) / n,
        turned,
        turned + sum(s.arrival_rps for s in recent) / n,
        capacity_rps(load.profile, load.variant.max_batch) * load.slots * (1 - cfg.headroom),
        len(load.window) > 1 and last.queue_rows > first.queue_rows > load.variant.max_batch * load.slots,
        sum(s.busy for s in recent) / n,
    )


def state_of(load: VariantLoad, cfg: ScalingConfig) -> tuple[str, str, float]:
    """(state, reason, demand in rows/s) of a loaded variant over its window."""
    if not load.window or all(s.arrival_rps == 0 and s.turned_away_rps == 0 for s in load.window):
        return "inactive", "no requests in the window", 0.0
    demand = sum(s.arrival_rps + s.turned_away_rps for s in load.window) / len(load.window)
    pr = pressure(load, cfg)  # scale up on the last samples, down on the whole window
    first, last = load.window[0], load.window[-1]
    if pr.saturated(cfg):
        demand = max(demand, pr.surge)
        if demand > pr.cap:
            why = f"demand {demand:.0f} rows/s over capacity {pr.cap:.0f} of {load.carried()}"
        elif pr.growing:
            why = f"queue growing {first.queue_rows} -> {last.queue_rows} rows"
        else:
            why = f"replicas computing {pr.busy:.0%} of the time (demand {demand:.0f} rows/s)"
        return "overloaded", why, demand
    if pr.share > cfg.turned_away_share:
        return (
            "overloaded",
            f"{pr.share:.0%} of requests turned away ({pr.turned:.1f} of {pr.surge:.1f} rows/s): "
            f"{load.carried()} too busy for their objectives",
            max(demand, pr.surge),
        )
    # interference slows the computation itself: a batch's compute time against its profile (time
    # queued behind a burst is load, not interference); p50 where compute time is not reported
    expected = load.profile.predict_ms(max(1, round(last.mean_batch)))
    observed, what = (last.compute_ms, "batches computed in") if last.compute_ms else (last.p50_ms, "p50")
    if observed > cfg.interference_factor * expected:
        return (
            "interfered",
            f"{what} {observed:.1f} ms vs {expected:.1f} ms profiled at batch {last.mean_batch:.1f}",
            demand,
        )
    return "active", f"demand {demand:.0f} of capacity {pr.cap:.0f} rows/s", demand


def hourly_usd(p: Profile) -> float:
    """What one replica costs per hour: its price per inference times the inferences it can serve
    in an hour (= its share of the hardware's hourly price)."""
    return p.cost_per_1k / 1000 * p.throughput * 3600
