"""The original INFaaS rules (the contender) on hand-built profiles and windows (pure)."""

import pytest

from infaas.policy import (
    Objective,
    Option,
    Sample,
    ScopeIndex,
    Unreachable,
    VariantLoad,
    WorkerRoom,
)
from infaas.policy.original import (
    OriginalConfig,
    OriginalMemory,
    autoscale_original,
    fit_ms,
    select_original,
)
from infaas.registry import Profile, Variant


def var(name, acc=0.9, max_batch=8, arch="a"):
    return Variant(
        name=name,
        architecture=arch,
        artifact_hash="h",
        accuracy=acc,
        accuracy_source="measured",
        max_batch=max_batch,
        status="ready",
    )


def prof(v, slope, intercept, cost=1e-4, load_ms=200.0, mem=100.0):
    return Profile(
        variant=v.name,
        hardware="cpu",
        fit_slope_ms=slope,
        fit_intercept_ms=intercept,
        cost_per_1k=cost,
        load_time_ms=load_ms,
        peak_memory_mb=mem,
        latency_p50_ms={1: slope + intercept},
    )


SLOW, FAST, SMALL = var("a.slow", 0.90), var("a.fast", 0.92), var("a.small", 0.91, max_batch=1)
P = {SLOW.name: prof(SLOW, 2.0, 6.0), FAST.name: prof(FAST, 0.5, 1.0), SMALL.name: prof(SMALL, 1.0, 2.0)}


def choose(objective, loaded, flagged=(), slots=None, rows=1):
    options = [
        Option(v, P[v.name], (slots or {}).get(v.name, (("w0", 0),)) if v.name in loaded else ())
        for v in (SLOW, FAST, SMALL)
    ]
    index = ScopeIndex(options)
    live = {o.variant.name: o.workers for o in options if o.workers}
    return select_original(objective, [o for o in index.ordered if o.workers], index, rows, "t", live.get, flagged)


def test_least_slack_among_running_then_the_least_busy_worker():
    # SLOW (8 ms) and FAST (1.5 ms) both meet 10 ms: the original takes the slowest that meets it
    c = choose(
        Objective(latency_ms=10), {"a.slow", "a.fast"}, slots={"a.slow": (("w0", 5), ("w1", 2)), "a.fast": (("w0", 0),)}
    )
    assert c.variant is SLOW and c.worker == "w1" and c.predicted_ms == pytest.approx(8.0)
    assert "least slack" in c.reason
    # at 5 ms only FAST meets it; the queue is not part of the original's prediction
    c = choose(Objective(latency_ms=5), {"a.slow", "a.fast"}, slots={"a.fast": (("w0", 50),)})
    assert c.variant is FAST and c.predicted_ms == pytest.approx(1.5)
    # a flagged (overloaded) variant is passed over while another running one meets the objective
    assert choose(Objective(latency_ms=10), {"a.slow", "a.fast"}, flagged={"a.slow"}).variant is FAST


def test_none_running_cold_starts_the_smallest_max_batch_without_counting_the_load():
    c = choose(Objective(latency_ms=10), set())
    assert c.variant is SMALL and c.worker is None
    assert c.predicted_ms == pytest.approx(3.0)  # 200 ms of loading is paid by the query, not predicted
    assert "cold start in the request path" in c.reason
    # running but every admissible one flagged: a cold one if any, else the flagged one still serves
    assert choose(Objective(latency_ms=10), {"a.slow"}, flagged={"a.slow"}).worker is None
    c = choose(Objective(latency_ms=10, min_accuracy=0.92), {"a.fast"}, flagged={"a.fast"})
    assert c.variant is FAST and c.worker == "w0" and "overloaded" in c.reason


def test_unreachable_objectives_say_why():
    with pytest.raises(Unreachable, match="min_accuracy 0.95 unreachable"):
        choose(Objective(min_accuracy=0.95), {"a.slow"})
    with pytest.raises(Unreachable, match="latency_ms 1 unreachable"):
        choose(Objective(latency_ms=1), {"a.slow"})


# ---- autoscaling -------------------------------------------------------------------------------
CFG = OriginalConfig()
FAMILY = {"a": [(SLOW, P[SLOW.name]), (FAST, P[FAST.name])]}


def loaded(v, replicas, rps, queue=0, p50=None, batch=1.0, t=10.0):
    p50 = fit_ms(P[v.name], batch) if p50 is None else p50
    return VariantLoad(v, P[v.name], tuple(replicas), (Sample(t, rps, rps, batch, queue, p50),))


def test_overload_flag_and_its_hysteresis():
    """SLOW at batch 1: L = 8 ms, 125 rows/s a replica. Flagged by a backlog over 0.8 x 125 rows,
    or by latency over 2.5 L with the rate over half of 125; cleared only under 1.5 L and the bound."""
    rooms = [WorkerRoom("w0", 1000, cpu=0.5)]
    _, mem = autoscale_original([loaded(SLOW, ["w0"], 50, queue=101)], FAMILY, rooms, 10, OriginalMemory(), CFG)
    assert "a.slow" in mem.flagged
    _, mem2 = autoscale_original([loaded(SLOW, ["w0"], 50, queue=99)], FAMILY, rooms, 10, OriginalMemory(), CFG)
    assert "a.slow" not in mem2.flagged
    _, hot = autoscale_original([loaded(SLOW, ["w0"], 70, p50=21)], FAMILY, rooms, 10, OriginalMemory(), CFG)
    assert "a.slow" in hot.flagged
    _, cool_rate = autoscale_original([loaded(SLOW, ["w0"], 60, p50=21)], FAMILY, rooms, 10, OriginalMemory(), CFG)
    assert "a.slow" not in cool_rate.flagged
    # once flagged it stays flagged at 1.5 L <= latency <= 2.5 L; clears below 1.5 L
    _, still = autoscale_original([loaded(SLOW, ["w0"], 10, p50=13)], FAMILY, rooms, 11, hot, CFG)
    assert "a.slow" in still.flagged
    _, clear = autoscale_original([loaded(SLOW, ["w0"], 10, p50=11)], FAMILY, rooms, 12, still, CFG)
    assert "a.slow" not in clear.flagged


def test_replicate_or_upgrade_by_load_time_cost_with_the_margin():
    """Demand 300 rows/s on one SLOW replica (119 rows/s with headroom): 2 more replicas needed,
    2 x 200 ms of loading. FAST loads in 300 ms: 400 < 1.5 x 300 -> replicate; in 250 ms:
    400 > 375 -> upgrade. Without room for two replicas, upgrade whatever it costs."""
    rooms = [WorkerRoom("w1", 1000), WorkerRoom("w2", 1000)]
    for fast_load, kind in ((300.0, "replicate"), (250.0, "upgrade")):
        family = {"a": [(SLOW, P[SLOW.name]), (FAST, prof(FAST, 0.5, 1.0, load_ms=fast_load))]}
        actions, _ = autoscale_original(
            [loaded(SLOW, ["w0"], 300, queue=200)], family, rooms, 10, OriginalMemory(), CFG
        )
        assert {a.kind for a in actions} == {kind}
        if kind == "replicate":
            assert sorted(a.target for a in actions) == ["w1", "w2"]
        else:
            assert actions[0].target == "a.fast"
    actions, _ = autoscale_original(
        [loaded(SLOW, ["w0"], 300, queue=200)], FAMILY, rooms[:1], 10, OriginalMemory(), CFG
    )
    assert [(a.kind, a.target) for a in actions] == [("upgrade", "a.fast")] and "no room" in actions[0].reason


def test_scale_down_after_ten_consecutive_low_checks_and_never_a_worker_removed():
    rooms = [WorkerRoom("w0", 1000, 1, 0.1), WorkerRoom("w1", 1000, 1, 0.1), WorkerRoom("w9", 1000, 0, 0.0)]
    mem = OriginalMemory()
    for i in range(9):
        actions, mem = autoscale_original([loaded(SLOW, ["w0", "w1"], 20, t=i)], FAMILY, rooms, i, mem, CFG)
        assert not actions
    # a check that is not low resets the count
    actions, mem = autoscale_original([loaded(SLOW, ["w0", "w1"], 200, t=9)], FAMILY, rooms, 9, mem, CFG)
    assert mem.low_checks == {}
    for i in range(10, 20):
        actions, mem = autoscale_original([loaded(SLOW, ["w0", "w1"], 20, t=i)], FAMILY, rooms, i, mem, CFG)
    assert [(a.kind, a.target) for a in actions] == [("unload", "w1")]
    assert all(a.kind != "remove_worker" for a in actions)  # the empty w9 stays: the original keeps CPU workers


def test_scale_out_when_every_worker_is_busy_then_back_off():
    busy = [WorkerRoom("w0", 1000, 1, 0.9), WorkerRoom("w1", 1000, 1, 0.85)]
    actions, mem = autoscale_original([loaded(SLOW, ["w0", "w1"], 100)], FAMILY, busy, 10, OriginalMemory(), CFG)
    assert [a.kind for a in actions] == ["add_worker"] and "every worker above 80% CPU" in actions[0].reason
    actions, mem = autoscale_original([loaded(SLOW, ["w0", "w1"], 100, t=20)], FAMILY, busy, 20, mem, CFG)
    assert not actions  # within the 30 s back-off
    actions, _ = autoscale_original([loaded(SLOW, ["w0", "w1"], 100, t=41)], FAMILY, busy, 41, mem, CFG)
    assert [a.kind for a in actions] == ["add_worker"]


def test_the_latency_line_goes_through_batches_1_4_8_as_the_original_profiler_measured():
    v = var("a.lined")
    p = Profile(
        variant=v.name,
        hardware="cpu",
        fit_slope_ms=9.0,
        fit_intercept_ms=9.0,
        latency_p50_ms={1: 4.0, 4: 7.0, 8: 11.0, 16: 40.0},
    )
    assert fit_ms(p, 1) == pytest.approx(4.0) and fit_ms(p, 16) == pytest.approx(19.0)  # not the measured 40
    assert fit_ms(P[SLOW.name], 2) == pytest.approx(10.0)  # without those three: the profile's own fit


def test_slots_are_looked_up_only_for_the_variants_the_scan_reaches():
    """Least slack is decided by the fitted line alone: the slots (a cost per hosting worker) of a
    faster running candidate are never asked for when a slower one runs and is not flagged."""
    options = [Option(v, P[v.name], (("w0", 0),)) for v in (SLOW, FAST)]
    index = ScopeIndex(options)
    asked = []

    def live(name):
        asked.append(name)
        return (("w0", 0),)

    c = select_original(Objective(latency_ms=10), index.ordered, index, 1, "t", live)
    assert c.variant is SLOW and asked == ["a.slow"]
    asked.clear()
    c = select_original(Objective(latency_ms=10), index.ordered, index, 1, "t", live, {"a.slow"})
    assert c.variant is FAST and asked == ["a.fast"]  # a flagged one is passed over unasked
