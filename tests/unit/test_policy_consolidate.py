"""Consolidation: once the fleet could do without a worker for ``consolidate_s``, the lightest one
is drained (replicas carried elsewhere unloaded, others moved first), nothing new lands on it, and
scale-in removes it once empty; a worker to add or CPU the others cannot absorb ends the drain."""

from infaas.policy.autoscale import autoscale
from infaas.policy.scaling import Memory, ScalingConfig, VariantLoad, WorkerRoom
from tests.unit.test_policy_autoscale import FP32, INT8, P8, P32, window

CFG = ScalingConfig(scale_down_s=10, idle_unload_s=600, consolidate_s=30, keep_warm=True)
FAMILY = {"a": [(FP32, P32)], "b": [(INT8, P8)]}


def loads(t: float, placement: dict[str, dict[str, int]], rps: dict[str, float]) -> list[VariantLoad]:
    """``placement``: variant -> {worker: instances}."""
    v = {FP32.name: (FP32, P32), INT8.name: (INT8, P8)}
    return [
        VariantLoad(*v[name], tuple(reps), window(t, rps.get(name, 0.0)), tuple(reps.values()))
        for name, reps in placement.items()
    ]


def rooms(cpu: dict[str, float], threads: dict[str, int], variants: dict[str, int]) -> list[WorkerRoom]:
    return [WorkerRoom(w, 1000.0, variants[w], cpu[w], 4, threads[w]) for w in cpu]


def run(mem, t, placement, rps, cpu, threads):
    variants = {w: sum(w in reps for reps in placement.values()) for w in cpu}
    return autoscale(loads(t, placement, rps), FAMILY, rooms(cpu, threads, variants), t, mem, CFG)


def test_a_cool_fleet_drains_its_lightest_worker_moving_then_unloading_and_scale_in_removes_it():
    cpu, threads = {"w0": 0.3, "w1": 0.05}, {"w0": 2, "w1": 1}
    placement = {FP32.name: {"w0": 2}, INT8.name: {"w1": 1}}
    rps = {FP32.name: 500.0, INT8.name: 100.0}
    actions, mem = run(Memory(), 0.0, placement, rps, cpu, threads)
    assert actions == [] and mem.cool_since == 0.0 and mem.drain is None  # cool, not for long enough yet
    actions, mem = run(mem, 31.0, placement, rps, cpu, threads)
    (a,) = actions  # w1 holds the fewest threads: its only variant moves to w0, which has two idle cores
    assert (a.kind, a.variant, a.target) == ("replicate", INT8.name, "w0") and mem.drain == "w1"
    assert "consolidating: worker w1 drains (the others would run at 35% CPU)" in a.reason
    placement[INT8.name] = {"w1": 1, "w0": 1}
    threads["w0"] = 3
    actions, mem = run(mem, 32.0, placement, rps, cpu, threads)
    assert [(a.kind, a.variant, a.target) for a in actions] == [("unload", INT8.name, "w1")], actions
    assert "other replicas carry 100 rows/s" in actions[0].reason
    placement[INT8.name] = {"w0": 1}
    actions, mem = run(mem, 33.0, placement, rps, cpu, threads)
    assert actions == [] and mem.empty_since == {"w1": 33.0}
    actions, mem = run(mem, 44.0, placement, rps, cpu, threads)
    assert [(a.kind, a.target) for a in actions] == [("remove_worker", "w1")]


def test_nothing_is_placed_on_a_draining_worker():
    cpu, threads = {"w0": 0.3, "w1": 0.05, "w2": 0.1}, {"w0": 4, "w1": 1, "w2": 1}
    placement = {FP32.name: {"w0": 4}, INT8.name: {"w1": 1}}
    mem = Memory(drain="w1", cool_since=0.0)
    # FP32 overloaded on w0 (every core held): it replicates to w2, not to the draining w1
    actions, mem = run(mem, 40.0, placement, {FP32.name: 3500.0, INT8.name: 10.0}, cpu, threads)
    assert [(a.kind, a.target) for a in actions][0] == ("replicate", "w2"), actions
    assert mem.drain == "w1"  # the drain goes on: the others have room
    # nowhere left for a scale-up: a worker is to be added, and the drain ends
    full = {w: 4 for w in cpu}
    actions, mem = run(mem, 45.0, {FP32.name: {"w0": 4, "w2": 4}, INT8.name: {"w1": 1}}, {FP32.name: 9000.0}, cpu, full)
    assert [a.kind for a in actions] == ["add_worker"] and mem.drain is None


def test_a_fleet_that_could_not_absorb_a_worker_keeps_it():
    cpu, threads = {"w0": 0.6, "w1": 0.5}, {"w0": 1, "w1": 1}  # 4.4 busy cores on 4 others: too hot
    placement = {FP32.name: {"w0": 1}, INT8.name: {"w1": 1}}
    rps = {FP32.name: 300.0, INT8.name: 300.0}
    mem = Memory()
    for t in (0.0, 40.0, 80.0):
        actions, mem = run(mem, t, placement, rps, cpu, threads)
        assert actions == [] and mem.drain is None and mem.cool_since is None
    # a drain in progress ends when the others heat up
    actions, mem = run(Memory(drain="w1", cool_since=0.0), 90.0, placement, rps, cpu, threads)
    assert actions == [] and mem.drain is None


def test_no_drain_at_the_floor_of_workers_or_when_switched_off():
    cpu, threads = {"w0": 0.05, "w1": 0.05}, {"w0": 1, "w1": 1}
    placement = {FP32.name: {"w0": 1}, INT8.name: {"w1": 1}}
    floor = ScalingConfig(scale_down_s=10, idle_unload_s=600, consolidate_s=30, min_workers=2)
    off = ScalingConfig(scale_down_s=10, idle_unload_s=600, consolidate_s=30, consolidate=False)
    for cfg in (floor, off):
        mem = Memory()
        for t in (0.0, 40.0):
            variants = {"w0": 1, "w1": 1}
            actions, mem = autoscale(
                loads(t, placement, {FP32.name: 10.0}), FAMILY, rooms(cpu, threads, variants), t, mem, cfg
            )
        assert actions == [] and mem.drain is None
