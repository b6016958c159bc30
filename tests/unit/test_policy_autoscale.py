"""Autoscaling on synthetic stats windows (pure: time and hysteresis passed in)."""

from infaas.policy.autoscale import autoscale
from infaas.policy.scaling import (
    Memory,
    Sample,
    ScalingConfig,
    VariantLoad,
    WorkerRoom,
    capacity_rps,
    hourly_usd,
    state_of,
)
from infaas.registry import Profile, Variant


def variant(name, acc=0.9, max_batch=8):
    return Variant(
        name=name,
        architecture="a",
        artifact_hash="h",
        accuracy=acc,
        accuracy_source="measured",
        max_batch=max_batch,
        status="ready",
    )


def profile(v, slope, intercept, cost, mem=100.0, load_ms=200.0, best=8):
    tput = best / (slope * best + intercept) * 1000
    return Profile(
        variant=v.name,
        hardware="cpu",
        fit_slope_ms=slope,
        fit_intercept_ms=intercept,
        cost_per_1k=cost,
        throughput=tput,
        peak_memory_mb=mem,
        load_time_ms=load_ms,
        best_batch=best,
    )


FP32 = variant("a.fp32")  # capacity at batch 8: 8 / (1*8+2) ms = 800 rows/s
P32 = profile(FP32, 1.0, 2.0, 1e-4)
INT8 = variant("a.int8")  # 8 / (0.25*8+1) ms = 2667 rows/s, cheaper
P8 = profile(INT8, 0.25, 1.0, 4e-5)
FAMILY = {"a": [(FP32, P32), (INT8, P8)]}
CFG = ScalingConfig(scale_down_s=10, idle_unload_s=60)


def window(t, rps, queue=0, p50=5.0, n=5):
    return tuple(Sample(t - n + i, rps, rps, 8, queue, p50) for i in range(n))


def load(v, p, replicas, t, rps, **kw):
    return VariantLoad(v, p, tuple(replicas), window(t, rps, **kw))


def test_capacity_and_states():
    assert capacity_rps(P32, 8) == 800
    assert state_of(load(FP32, P32, ["w0"], 10, 0), CFG)[0] == "inactive"
    assert state_of(load(FP32, P32, ["w0"], 10, 500), CFG)[0] == "active"
    state, why, demand = state_of(load(FP32, P32, ["w0"], 10, 900), CFG)
    assert state == "overloaded" and demand == 900 and "over capacity 760" in why
    assert state_of(load(FP32, P32, ["w0"], 10, 500, p50=30.0), CFG)[0] == "interfered"


def test_interference_is_judged_on_compute_time_when_the_worker_reports_it():
    # batch 8 is profiled at 10 ms; a p50 of 30 ms with batches computed in 11 ms is queueing behind a
    # burst (load), not interference; batches computed in 25 ms are
    queued = tuple(Sample(t, 500, 500, 8, 0, 30.0, compute_ms=11.0) for t in range(5))
    assert state_of(VariantLoad(FP32, P32, ("w0",), queued), CFG)[0] == "active"
    slowed = tuple(Sample(t, 500, 500, 8, 0, 30.0, compute_ms=25.0) for t in range(5))
    state, why, _ = state_of(VariantLoad(FP32, P32, ("w0",), slowed), CFG)
    assert state == "interfered" and "batches computed in 25.0 ms vs 10.0 ms" in why


def test_spike_replicates_when_that_is_cheaper_and_placeable():
    family = {"a": [(FP32, P32)]}  # no faster variant to upgrade to
    actions, _ = autoscale([load(FP32, P32, ["w0"], 10, 1200)], family, [WorkerRoom("w1", 1000)], 10, Memory(), CFG)
    assert [(a.kind, a.target) for a in actions] == [("replicate", "w1")]
    assert "overloaded" in actions[0].reason


def test_spike_upgrades_when_replicating_costs_more_or_cannot_be_placed():
    actions, _ = autoscale([load(FP32, P32, ["w0"], 10, 2000)], FAMILY, [WorkerRoom("w1", 1000)], 10, Memory(), CFG)
    assert [(a.kind, a.target) for a in actions] == [("upgrade", "a.int8")]
    full = [WorkerRoom("w1", 10)]  # not enough memory anywhere: replication is infeasible
    actions, _ = autoscale([load(FP32, P32, ["w0"], 10, 1000)], {"a": [(FP32, P32)]}, full, 10, Memory(), CFG)
    assert actions[0].kind == "add_worker"


def priced(name, slope, intercept, usd_per_hour, load_ms, acc=0.9):
    """A variant whose replica costs ``usd_per_hour`` (cost per 1k follows from its throughput)."""
    v = variant(name, acc)
    p = profile(v, slope, intercept, 1.0, load_ms=load_ms)
    return v, p.model_copy(update={"cost_per_1k": usd_per_hour / 3.6 / p.throughput})


def scale_up(v, p, family, replicas, rps, cfg=CFG):
    rooms = [WorkerRoom(f"w{i}", 1000) for i in range(len(replicas), 6)]
    actions, _ = autoscale([load(v, p, replicas, 10, rps)], {"a": family}, rooms, 10, Memory(), cfg)
    return actions


def test_hourly_price_of_a_replica():
    v, p = priced("a.fp32", 1.0, 2.0, 0.5, 200)
    assert abs(hourly_usd(p) - 0.5) < 1e-12


def test_replicate_when_the_placement_it_leaves_is_cheaper_whatever_its_load_time():
    """fp32 on 1 core ($0.10/h, 800 rows/s, loads in 2 s) against a 2-core variant ($0.40/h, 2,667
    rows/s, loads in 0.1 s) at 2,000 rows/s: three fp32 replicas cost $0.30/h, the upgrade $0.40/h.
    (Adding load seconds to dollars, the old rule upgraded: 2 x (0.1 + 2) > 1.5 x (0.4 + 0.1).)"""
    slow, ps = priced("a.fp32", 1.0, 2.0, 0.10, 2000)
    fast, pf = priced("a.fp32-t2", 0.25, 1.0, 0.40, 100)
    actions = scale_up(slow, ps, [(slow, ps), (fast, pf)], ["w0"], 2000)
    assert [a.kind for a in actions] == ["replicate"]
    assert "3 replica(s) at $0.3/h" in actions[0].reason and "upgrade a.fp32-t2: $0.4/h" in actions[0].reason


def test_upgrade_when_the_placement_it_leaves_is_cheaper():
    """Two 2-core fp32 replicas ($0.20/h each) overloaded at 1,700 rows/s; a 1-core INT8 variant
    ($0.10/h, 2,667 rows/s) carries it on the same two replicas for $0.20/h against $0.60/h for
    three fp32 replicas. (Comparing one more replica, $0.20, with the whole upgrade x 1.5, $0.30,
    the old rule replicated.)"""
    fp32, p32 = priced("a.fp32", 1.0, 2.0, 0.20, 1)
    int8, p8 = priced("a.int8", 0.25, 1.0, 0.10, 1)
    actions = scale_up(fp32, p32, [(fp32, p32), (int8, p8)], ["w0", "w1"], 1700)
    assert [(a.kind, a.target) for a in actions] == [("upgrade", "a.int8")]
    assert "on 2 replica(s) at $0.2/h" in actions[0].reason


def test_load_time_is_a_constraint_not_a_price():
    fp32, p32 = priced("a.fp32", 1.0, 2.0, 0.20, 500)
    int8, p8 = priced("a.int8", 0.25, 1.0, 0.10, 60_000)  # cheaper, but a minute to load
    actions = scale_up(fp32, p32, [(fp32, p32), (int8, p8)], ["w0", "w1"], 1700)
    assert [a.kind for a in actions] == ["replicate"]
    # when nothing loads in time, the soonest relief wins and the reason says so
    slow_load = ScalingConfig(scale_down_s=10, idle_unload_s=60, max_scale_load_s=0.1)
    actions = scale_up(fp32, p32, [(fp32, p32), (int8, p8)], ["w0", "w1"], 1700, slow_load)
    assert [a.kind for a in actions] == ["replicate"] and "this loads soonest" in actions[0].reason


def test_sustained_low_load_scales_down_only_after_the_hysteresis_time():
    mem = Memory()
    two = ["w0", "w1"]
    for t in range(0, 10):  # low (fits in one replica) but not for long enough yet
        actions, mem = autoscale([load(FP32, P32, two, t, 100)], FAMILY, [], t, mem, CFG)
        assert actions == []
    actions, mem = autoscale([load(FP32, P32, two, 10, 100)], FAMILY, [], 10, mem, CFG)
    assert [(a.kind, a.target) for a in actions] == [("unload", "w1")]
    # one replica left, still low: after another quiet period, downgrade to the cheaper variant
    for t in range(11, 21):
        actions, mem = autoscale([load(FP32, P32, ["w0"], t, 100)], FAMILY, [], t, mem, CFG)
        assert actions == []
    actions, mem = autoscale([load(FP32, P32, ["w0"], 21, 100)], FAMILY, [], 21, mem, CFG)
    assert [(a.kind, a.target) for a in actions] == [("downgrade", "a.int8")]


def test_oscillating_load_never_flaps():
    mem, kinds = Memory(), []
    two = ["w0", "w1"]
    for t in range(0, 120):
        rps = 100 if (t // 5) % 2 == 0 else 1200  # low 5 s, high 5 s, ...
        actions, mem = autoscale(
            [load(FP32, P32, two, t, rps)], {"a": [(FP32, P32)]}, [WorkerRoom("w2", 1000)], t, mem, CFG
        )
        kinds += [a.kind for a in actions]
    assert "unload" not in kinds and "downgrade" not in kinds  # low never lasts the 10 s hysteresis


def test_idle_variant_is_unloaded_after_the_idle_timeout():
    cold = ScalingConfig(scale_down_s=10, idle_unload_s=60, keep_warm=False)
    mem = Memory()
    for t in range(0, 60):
        actions, mem = autoscale([load(INT8, P8, ["w0"], t, 0)], FAMILY, [], t, mem, cold)
        assert actions == []
    actions, mem = autoscale([load(INT8, P8, ["w0"], 60, 0)], FAMILY, [], 60, mem, cold)
    assert [(a.kind, a.target) for a in actions] == [("unload", "w0")] and "idle for 60 s" in actions[0].reason


def test_idle_replicas_go_after_the_hysteresis_time_and_keep_warm_leaves_one():
    mem, unloads = Memory(), []
    replicas = ["w0", "w1"]
    for t in range(0, 100):
        actions, mem = autoscale([load(INT8, P8, replicas, t, 0)], FAMILY, [], t, mem, CFG)
        unloads += [(t, a.target) for a in actions if a.kind == "unload"]
        replicas = [w for w in replicas if w not in {a.target for a in actions}]
    assert unloads == [(10, "w1")]  # the extra replica after 10 s; the last one stays (keep_warm)
    # two idle variants of one architecture: one goes entirely, the other keeps a replica
    loads = [load(INT8, P8, ["w0"], 0, 0), load(FP32, P32, ["w1"], 0, 0)]
    mem = Memory()
    for t in range(0, 61):
        actions, mem = autoscale(loads, FAMILY, [], t, mem, CFG)
    assert [(a.kind, a.variant) for a in actions] == [("unload", "a.int8")]


def test_busy_replicas_are_overloaded_even_when_the_profile_says_otherwise():
    busy = VariantLoad(FP32, P32, ("w0",), tuple(Sample(t, 300, 300, 8, 0, 5.0, busy=0.99) for t in range(5)))
    state, why, _ = state_of(busy, CFG)
    assert state == "overloaded" and "computing 99%" in why


def test_scale_up_waits_for_the_cooldown_before_acting_again():
    family = {"a": [(FP32, P32)]}
    rooms = [WorkerRoom("w1", 1000), WorkerRoom("w2", 1000)]
    mem, kinds = Memory(), []
    for t in (0, 1, 2, 3, 4):
        actions, mem = autoscale([load(FP32, P32, ["w0"], t, 3000)], family, rooms, t, mem, CFG)
        kinds.append([a.kind for a in actions])
    assert kinds == [["replicate"], [], [], ["replicate"], []]  # cooldown 3 s


def test_an_empty_worker_is_removed_after_the_hysteresis_time_but_never_below_the_minimum():
    mem = Memory()
    rooms = [WorkerRoom("w0", 1000, variants=1), WorkerRoom("w1", 1000, variants=0), WorkerRoom("w2", 1000, 0)]
    removed, two = [], ScalingConfig(scale_down_s=10, min_workers=2)
    for t in range(0, 20):
        actions, mem = autoscale([], FAMILY, rooms, t, mem, two)
        removed += [(t, a.target) for a in actions if a.kind == "remove_worker"]
        rooms = [r for r in rooms if r.name not in {a.target for a in actions}]
    assert removed == [(10, "w1")]  # w2 would take the cluster below two workers
    rooms = [WorkerRoom("w0", 1000, variants=1), WorkerRoom("w1", 1000, variants=0)]
    actions, _ = autoscale([], FAMILY, rooms, 20, Memory(empty_since={"w1": 10}), CFG)
    assert [a.kind for a in actions] == ["remove_worker"] and "hosted nothing for 10 s" in actions[0].reason


def test_downgrade_never_trades_accuracy():
    worse = variant("a.tiny", acc=0.5)
    family = {"a": [(FP32, P32), (worse, profile(worse, 0.01, 0.1, 1e-6))]}
    mem = Memory()
    for t in range(0, 40):
        actions, mem = autoscale([load(FP32, P32, ["w0"], t, 50)], family, [], t, mem, CFG)
        assert all(a.kind != "downgrade" for a in actions)


def test_never_upgrade_or_downgrade_to_a_variant_that_takes_smaller_batches():
    small = variant("a.int8.b1", max_batch=1)
    fast_small = profile(small, 0.01, 0.05, 1e-6, best=1)  # cheaper and faster per row, but batch 1 only
    family = {"a": [(FP32, P32), (small, fast_small)]}
    actions, _ = autoscale([load(FP32, P32, ["w0"], 10, 2000)], family, [], 10, Memory(), CFG)
    assert [a.kind for a in actions] == ["add_worker"]
    mem = Memory()
    for t in range(0, 40):
        actions, mem = autoscale([load(FP32, P32, ["w0"], t, 50)], family, [], t, mem, CFG)
        assert all(a.kind != "downgrade" for a in actions)


def test_a_surge_is_seen_in_the_newest_samples_before_the_window_average_moves():
    window = tuple(Sample(t, rps, rps, 8, 0, 5.0) for t, rps in enumerate([100, 100, 100, 1200, 1200]))
    state, why, demand = state_of(VariantLoad(FP32, P32, ("w0",), window), CFG)
    assert state == "overloaded" and demand == 1200  # the window's mean (540) is well under 760
    calm = tuple(Sample(t, rps, rps, 8, 0, 5.0) for t, rps in enumerate([1200, 1200, 1200, 100, 100]))
    assert state_of(VariantLoad(FP32, P32, ("w0",), calm), CFG)[0] != "overloaded"


def test_the_controller_drops_samples_older_than_its_horizon():
    """A variant whose workers stopped reporting (restarting, busy) is not judged on old samples."""
    from collections import deque
    from types import SimpleNamespace

    from infaas.control import Autoscaler
    from infaas.policy.policies import InfaasPolicy
    from infaas.settings import Settings

    plane = SimpleNamespace(
        catalog=SimpleNamespace(variants={}, profiles={}, by_arch={}),
        cluster=SimpleNamespace(workers=[], cores_per_worker=1, initial=1, worker_limit=0),
    )
    scaler = Autoscaler(plane, Settings(autoscale_window=5, autoscale_interval_s=1.0), InfaasPolicy())
    old, fresh = Sample(0.0, 9000.0, 10.0, 1.0, 500, 80.0, 1.0), Sample(95.0, 10.0, 10.0, 1.0, 0, 1.0, 0.1)
    scaler.windows["v"] = deque([old, fresh], maxlen=5)
    scaler.decide(now=100.0)  # horizon: 2 x 5 samples x 1 s
    assert list(scaler.windows["v"]) == [fresh]


def busy_load(v, p, replicas, t, rps, busy):
    return VariantLoad(v, p, tuple(replicas), tuple(Sample(t - 5 + i, rps, rps, 8, 0, 5.0, busy) for i in range(5)))


def test_a_saturated_worker_gets_a_second_even_when_no_variant_is_over_its_own_capacity():
    """Two variants share w0's core, each at half its own capacity: neither is overloaded, together
    they keep the core at 95 %. After scale_out_s of that, a worker is added (for the busier one),
    then not again until worker_cooldown_s has passed."""
    other = variant("b.fp32")
    po = profile(other, 1.0, 2.0, 1e-4)
    loads = [busy_load(FP32, P32, ["w0"], 0, 400, 0.55), busy_load(other, po, ["w0"], 0, 350, 0.4)]
    hot = [WorkerRoom("w0", 1000, 2, cpu=0.95)]
    mem = Memory()
    actions, mem = autoscale(loads, {"a": [(FP32, P32)]}, hot, 0.0, mem, CFG)
    assert actions == []  # hot, but not for long enough
    actions, mem = autoscale(loads, {"a": [(FP32, P32)]}, hot, 2.5, mem, CFG)
    assert [(a.kind, a.variant) for a in actions] == [("add_worker", "a.fp32")]
    assert "every worker above 80% CPU for 2 s (w0 95%)" in actions[0].reason
    actions, mem = autoscale(loads, {"a": [(FP32, P32)]}, hot, 6.0, mem, CFG)
    assert actions == []  # the worker cooldown
    # a worker that is not measured yet, or one that is cool, means no scale-out
    assert autoscale(loads, {}, [*hot, WorkerRoom("w1", 1000, 0)], 30.0, Memory(hot_since=0.0), CFG)[0] == []


def test_variants_on_a_hot_worker_spread_to_a_cool_one():
    other = variant("b.fp32")
    po = profile(other, 1.0, 2.0, 1e-4)
    loads = [busy_load(FP32, P32, ["w0"], 10, 400, 0.55), busy_load(other, po, ["w0"], 10, 5, 0.02)]
    rooms = [WorkerRoom("w0", 1000, 2, cpu=0.95), WorkerRoom("w1", 1000, 0, cpu=0.05)]
    actions, _ = autoscale(loads, {}, rooms, 10, Memory(), CFG)
    # the busy variant gets a replica on w1; the one that hardly computes stays where it is
    assert [(a.kind, a.variant, a.target) for a in actions] == [("replicate", "a.fp32", "w1")]
    assert "w0 at 95% CPU" in actions[0].reason and "w1 has CPU to spare (5%)" in actions[0].reason
    # no cool worker: nothing to spread to
    warm = [WorkerRoom("w0", 1000, 2, cpu=0.95), WorkerRoom("w1", 1000, 1, cpu=0.7)]
    assert autoscale(loads, {}, warm, 10, Memory(), CFG)[0] == []


def turned(t, arrived, away, n=5):
    """A window where ``away`` 1-row requests a second were refused by the selection (the replicas
    busy) beside ``arrived``."""
    share = away / (away + arrived) if away else 0.0
    return tuple(
        Sample(t - n + i, arrived, arrived, 1, 0, 3.0, turned_away_rps=away, turned_away_share=share) for i in range(n)
    )


def test_requests_turned_away_by_the_selection_are_demand_and_overload_the_variant():
    # 40 rows/s arrive, far under the 800 rows/s a replica computes at batch 8, but the objective
    # leaves no room to queue: 10 more rows/s were refused (429) because the replica was busy
    state, why, demand = state_of(VariantLoad(FP32, P32, ("w0",), turned(10, 40, 10)), CFG)
    assert state == "overloaded" and demand == 50 and "20% of requests turned away (10.0 of 50.0 rows/s)" in why
    # every request refused (nothing arrives): still demand, not an idle variant
    assert state_of(VariantLoad(FP32, P32, ("w0",), turned(10, 0, 5)), CFG)[0] == "overloaded"
    # a stray refusal under the share is not overload
    assert state_of(VariantLoad(FP32, P32, ("w0",), turned(10, 100, 2)), CFG)[0] == "active"
    family = {"a": [(FP32, P32)]}
    actions, mem = autoscale(
        [VariantLoad(FP32, P32, ("w0",), turned(10, 40, 10))], family, [WorkerRoom("w1", 1000)], 10, Memory(), CFG
    )
    assert [(a.kind, a.target) for a in actions] == [("replicate", "w1")] and "turned away" in actions[0].reason
    assert mem.short["a.fp32"] == (10, 1, 50)


def test_a_variant_that_turned_requests_away_keeps_the_replica_it_got_while_demand_holds():
    family, two = {"a": [(FP32, P32)]}, ("w0", "w1")
    mem = Memory(short={"a.fp32": (10, 1, 50)})  # one replica turned requests away at 50 rows/s
    for t in range(11, 40):  # two replicas now serve all 50 rows/s: low by throughput, kept by the hold
        actions, mem = autoscale([VariantLoad(FP32, P32, two, turned(t, 50, 0))], family, [], t, mem, CFG)
        assert actions == []
    # demand fell under half of what it was: the usual hysteresis applies again
    kinds = []
    for t in range(40, 52):
        actions, mem = autoscale([VariantLoad(FP32, P32, two, turned(t, 20, 0))], family, [], t, mem, CFG)
        kinds += [(a.kind, a.target) for a in actions]
    assert kinds == [("unload", "w1")]
    # after the hold, the same demand that was held scales down too
    mem = Memory(short={"a.fp32": (10, 1, 50)})
    kinds = []
    for t in range(311, 323):
        actions, mem = autoscale([VariantLoad(FP32, P32, two, turned(t, 50, 0))], family, [], t, mem, CFG)
        kinds += [(a.kind, a.target) for a in actions]
    assert kinds == [("unload", "w1")] and "a.fp32" not in mem.short


def test_requests_turned_away_add_a_worker_only_when_the_workers_have_no_cpu_to_spare():
    """Turned away but not short of throughput: short of replicas where it runs. No room for one on
    the workers there is not, alone, a reason for another worker (it would share the machine's cores
    with the frontend); every worker hosting it above worker_busy CPU is, as INFaaS's rule has it."""
    family = {"a": [(FP32, P32)]}
    turned_load = VariantLoad(FP32, P32, ("w0",), turned(10, 40, 10))
    cool = [WorkerRoom("w0", 0, cpu=0.6, cores=1, threads=1)]
    actions, _ = autoscale([turned_load], family, cool, 10, Memory(), CFG)
    assert actions == []
    hot = [WorkerRoom("w0", 0, cpu=0.9, cores=1, threads=1)]
    actions, _ = autoscale([turned_load], family, hot, 10, Memory(), CFG)
    assert [a.kind for a in actions] == ["add_worker"] and "turned away" in actions[0].reason
    # short of throughput as well: a worker as before, whatever the CPU
    both = VariantLoad(FP32, P32, ("w0",), turned(10, 900, 100))
    actions, _ = autoscale([both], family, cool, 10, Memory(), CFG)
    assert [a.kind for a in actions] == ["add_worker"] and "over capacity" in actions[0].reason
