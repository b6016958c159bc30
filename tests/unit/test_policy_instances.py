"""Runtime instances in the autoscaling policy: a replica on a worker with idle cores grows instances
before the variant takes a replica elsewhere; capacity counts instances; scale-down shrinks them, a
whole single-instance replica first (its worker may empty)."""

from infaas.policy.autoscale import autoscale
from infaas.policy.scaling import Memory, Sample, ScalingConfig, VariantLoad, WorkerRoom, state_of
from tests.unit.test_policy_autoscale import FP32, P32, window

CFG = ScalingConfig(scale_down_s=10, idle_unload_s=60, consolidate=False)  # tests/unit/test_policy_consolidate.py
ALONE = {"a": [(FP32, P32)]}  # capacity 800 rows/s per instance at batch 8, 760 with the headroom


def grown(replicas: dict[str, int], t: float, rps: float) -> VariantLoad:
    return VariantLoad(FP32, P32, tuple(replicas), window(t, rps), tuple(replicas.values()))


def test_capacity_counts_every_instance():
    load = grown({"w0": 3}, 10, 2000)
    assert load.slots == 3 and load.instances_on("w0") == 3
    state, why, _ = state_of(load, CFG)
    assert state == "active" and "capacity 2280" in why
    state, why, _ = state_of(grown({"w0": 2, "w1": 1}, 10, 2500), CFG)
    assert state == "overloaded" and "of 3 instance(s) on 2 replica(s)" in why


def test_an_overloaded_replica_grows_on_its_worker_when_it_has_idle_cores():
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.25, cores=4, threads=1), WorkerRoom("w1", 1000, 0, cpu=0.0, cores=4)]
    actions, _ = autoscale([grown({"w0": 1}, 10, 2000)], ALONE, rooms, 10, Memory(), CFG)
    (a,) = actions
    # 2000 rows/s needs ceil(2000 / 760) = 3 instances: two more, and w0 has three idle cores
    assert (a.kind, a.target, a.instances) == ("grow", "w0", 3), a
    assert "3 idle core(s), CPU 25%" in a.reason and "replicate +2 replica(s)" in a.reason


def test_growth_stops_at_the_idle_cores_and_the_memory():
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.5, cores=2, threads=1), WorkerRoom("w1", 1000, 0, cpu=0.0, cores=2)]
    (a,), _ = autoscale([grown({"w0": 1}, 10, 3000)], ALONE, rooms, 10, Memory(), CFG)
    assert (a.kind, a.instances) == ("grow", 2)  # one idle core: one more instance, not three
    tight = [WorkerRoom("w0", 150, 1, cpu=0.25, cores=8, threads=1)]  # memory for one more (100 MB each)
    (a,), _ = autoscale([grown({"w0": 1}, 10, 3000)], ALONE, tight, 10, Memory(), CFG)
    assert (a.kind, a.instances) == ("grow", 2)


def test_a_hot_full_or_unmeasured_worker_replicates_instead():
    for room in (
        WorkerRoom("w0", 1000, 1, cpu=0.9, cores=4, threads=1),  # hot: its cores are taken by others
        WorkerRoom("w0", 1000, 1, cpu=0.3, cores=4, threads=4),  # every core held by instances
        WorkerRoom("w0", 1000, 1, cpu=None, cores=4, threads=1),  # not measured yet
        WorkerRoom("w0", 1000, 1, cpu=0.3),  # cores not said
    ):
        (a,), _ = autoscale([grown({"w0": 1}, 10, 2000)], ALONE, [room, WorkerRoom("w1", 1000, 0)], 10, Memory(), CFG)
        assert (a.kind, a.target) == ("replicate", "w1"), (room, a)
    off = ScalingConfig(scale_down_s=10, idle_unload_s=60, grow=False)
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.25, cores=4, threads=1), WorkerRoom("w1", 1000, 0)]
    (a,), _ = autoscale([grown({"w0": 1}, 10, 2000)], ALONE, rooms, 10, Memory(), off)
    assert a.kind == "replicate"


def test_low_load_unloads_a_single_instance_replica_first_then_shrinks():
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.1, cores=4, threads=3), WorkerRoom("w1", 1000, 1, cpu=0.1, cores=4)]
    mem = Memory()
    _, mem = autoscale([grown({"w0": 3, "w1": 1}, 10, 300)], ALONE, rooms, 10, mem, CFG)
    (a,), mem = autoscale([grown({"w0": 3, "w1": 1}, 21, 300)], ALONE, rooms, 21, mem, CFG)
    assert (a.kind, a.target) == ("unload", "w1") and "fitted in 3 instance(s)" in a.reason
    _, mem = autoscale([grown({"w0": 3}, 22, 300)], ALONE, rooms, 22, mem, CFG)
    (a,), mem = autoscale([grown({"w0": 3}, 33, 300)], ALONE, rooms, 33, mem, CFG)
    assert (a.kind, a.target, a.instances) == ("shrink", "w0", 2) and "2 instance(s) left on w0" in a.reason
    # demand that needs what it has: nothing goes
    _, mem = autoscale([grown({"w0": 2}, 34, 700)], ALONE, rooms, 34, mem, CFG)
    assert autoscale([grown({"w0": 2}, 50, 700)], ALONE, rooms, 50, mem, CFG)[0] == []


def test_an_idle_variant_shrinks_to_one_instance_and_keeps_it_warm():
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.0, cores=4, threads=4)]
    _, mem = autoscale([grown({"w0": 4}, 10, 0)], ALONE, rooms, 10, Memory(), CFG)
    (a,), mem = autoscale([grown({"w0": 4}, 21, 0)], ALONE, rooms, 21, mem, CFG)
    assert (a.kind, a.instances) == ("shrink", 1) and "no requests for 11 s" in a.reason
    _, mem = autoscale([grown({"w0": 1}, 22, 0)], ALONE, rooms, 22, mem, CFG)
    assert autoscale([grown({"w0": 1}, 200, 0)], ALONE, rooms, 200, mem, CFG)[0] == []  # kept warm


def test_at_an_equal_price_growing_wins_over_swapping_to_a_two_thread_variant():
    from tests.unit.test_policy_autoscale import profile, variant

    t2 = variant("a.fp32-t2").model_copy(update={"threads": 2})
    # two threads run a batch of 8 in 6 ms: 1333 rows/s for the price of two 1-thread instances
    p2 = profile(t2, 0.5, 2.0, 2 * P32.cost_per_1k * P32.throughput / (8 / 6 * 1000) * (1 - 1e-12))  # float noise
    family = {"a": [(FP32, P32), (t2, p2)]}
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.25, cores=2, threads=1)]
    (a,), _ = autoscale([grown({"w0": 1}, 10, 1000)], family, rooms, 10, Memory(), CFG)
    assert (a.kind, a.instances) == ("grow", 2) and "upgrade a.fp32-t2" in a.reason, a


def test_no_lateral_upgrade_from_grown_instances_to_a_form_barely_faster():
    from tests.unit.test_policy_autoscale import profile, variant

    t2 = variant("a.fp32-t2").model_copy(update={"threads": 2})
    # 2 threads run a batch of 8 in 4.8 ms: 1667 rows/s, 4 % more than the two 1-thread instances
    # running now (1600), for the same price: a swap would buy nothing but a reload
    p2 = profile(t2, 0.35, 2.0, 2 * P32.cost_per_1k * P32.throughput / (8 / 4.8 * 1000))
    family = {"a": [(FP32, P32), (t2, p2)]}
    busy = VariantLoad(FP32, P32, ("w0",), tuple(Sample(t, 1400, 1400, 8, 0, 5.0, busy=0.99) for t in range(5)), (2,))
    rooms = [WorkerRoom("w0", 1000, 1, cpu=0.95, cores=2, threads=2)]
    (a,), _ = autoscale([busy], family, rooms, 10, Memory(), CFG)
    assert a.kind == "add_worker" and "upgrade" not in a.reason, a
