"""The controller's samples from worker counters (pure: the controller and the simulator share them)."""

from collections import deque

import pytest

from infaas.control.samples import (
    Observations,
    age_out,
    family_of,
    replica_rates,
    variant_loads,
    window_sample,
    worker_cpu,
)
from infaas.policy import Sample
from tests.unit.test_policy_autoscale import FP32, INT8, P8, P32, variant


def counters(completed, arrived=None, batches=1, busy_s=0.0, queued=0, p50=4.0, offline=0, instances=1, turned=0):
    return {
        "completed_rows": completed,
        "arrived_rows": completed if arrived is None else arrived,
        "arrived_requests": (completed if arrived is None else arrived) // 2,  # 2-row requests
        "turned_away_rows": turned,
        "turned_away_requests": turned // 2,
        "batches": batches,
        "busy_s": busy_s,
        "queued_rows": queued,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "offline_rows": offline,
        "instances": instances,
    }


def test_replica_rates_are_deltas_over_time_and_skip_first_and_restarted_reports():
    assert replica_rates(None, 1.0, counters(10)) is None  # a first report: no rate yet
    old = (1.0, counters(100, arrived=110, batches=10, busy_s=0.2, offline=4, turned=2))
    assert replica_rates(old, 1.0, counters(150)) is None  # no time passed
    assert replica_rates(old, 2.0, counters(50)) is None  # counters went back: a restarted process
    r = replica_rates(
        old, 3.0, counters(180, arrived=210, batches=20, busy_s=1.2, queued=6, offline=10, instances=2, turned=8)
    )
    assert r == pytest.approx(
        {
            "arrival": 50.0,
            "turned": 3.0,  # refused by the selection while it was busy: demand too
            "requests": 25.0,
            "turned_requests": 1.5,
            "completed": 40.0,
            "offline": 3.0,
            "batch": 8.0,
            "queue": 6,
            "p50": 4.0,
            "p99": 8.0,
            "busy": 0.25,
            "compute": 100.0,  # 1.0 s of compute over 10 batches
        }
    )


def test_a_window_sample_sums_rates_and_takes_the_slowest_replica():
    parts = [
        {"arrival": 10, "completed": 9, "batch": 4.0, "queue": 2, "p50": 3.0, "busy": 0.5, "compute": 2.5},
        {"arrival": 20, "completed": 18, "batch": 0.0, "queue": 5, "p50": 7.0, "busy": 0.1, "compute": 0.0},
    ]
    # 1 and 2 rows/s turned away, in 1 and 1 requests/s, beside 5 and 3 requests/s that arrived
    for p, turned, asked in zip(parts, (1, 2), (5, 3), strict=True):
        p.update(turned=turned, turned_requests=1, requests=asked)
    window: deque[Sample] = deque()
    assert window_sample(5.0, parts, window) == Sample(5.0, 30, 27, 4.0, 7, 7.0, pytest.approx(0.3), 2.5, 3, 0.2)
    idle = [dict(p, batch=0.0) for p in parts]
    window.append(Sample(4.0, 1, 1, 6.0, 0, 1.0))
    assert window_sample(6.0, idle, window).mean_batch == 6.0  # no batch ran: the last one's size


def test_worker_cpu_is_the_busy_share_of_its_cores():
    assert worker_cpu(None, 2.0, 1.0, 2) is None
    assert worker_cpu((1.0, 1.0), 3.0, 3.0, 2) == 0.5
    assert worker_cpu((1.0, 5.0), 3.0, 3.0, 2) is None  # cpu time went back: a new process


def test_old_samples_age_out_and_only_loaded_profiled_variants_are_judged():
    w = deque(Sample(t, 1, 1, 1, 0, 1.0) for t in (1.0, 5.0, 9.0))
    age_out([w], 10.0, 6.0)
    assert [s.time for s in w] == [5.0, 9.0]
    windows = {FP32.name: w, INT8.name: deque(w), "unprofiled": deque(w), "gone": deque(w)}
    hosts = {FP32.name: (("w0", 1),), INT8.name: (("w0", 3), ("w1", 1)), "unprofiled": (("w0", 1),)}
    loads = variant_loads(
        windows,
        {v.name: v for v in (FP32, INT8, variant("unprofiled"), variant("gone"))},
        {FP32.name: P32, INT8.name: P8},
        lambda name: hosts.get(name, ()),
    )
    assert [(x.variant.name, x.replicas, x.instances, len(x.window)) for x in loads] == [
        (FP32.name, ("w0",), (1,), 2),
        (INT8.name, ("w0", "w1"), (3, 1), 2),
    ]
    assert loads[1].slots == 4


def test_the_family_holds_ready_profiled_variants_that_fit_a_worker():
    wide = variant("a.wide").model_copy(update={"threads": 4})
    failed = variant("a.failed").model_copy(update={"status": "failed"})
    fam = family_of(
        {"a": [FP32, INT8, wide, failed, variant("a.unprofiled")]}, {v.name: P32 for v in (FP32, INT8, wide, failed)}, 2
    )
    assert [v.name for v, _ in fam["a"]] == [FP32.name, INT8.name]


def test_observations_fold_rounds_of_reports_into_one_window_per_variant():
    seen = Observations(window=3)

    def report(t, cpu_s, **variants):
        return {"time": t, "cpu_s": cpu_s, "cores": 2, "variants": variants}

    # first round: counters remembered, no rates yet, no sample
    cpu = seen.observe([("w1", report(0.0, 0.0, a=counters(0))), ("w2", report(0.0, 5.0, a=counters(0)))], 0.0, {"a"})
    assert cpu == {"w1": None, "w2": None} and seen.windows == {}
    cpu = seen.observe(
        [("w1", report(1.0, 1.0, a=counters(30, busy_s=0.5))), ("w2", report(1.0, 6.5, a=counters(10, busy_s=0.1)))],
        1.0,
        {"a"},
    )
    assert cpu == pytest.approx({"w1": 0.5, "w2": 0.75})
    (s,) = seen.windows["a"]
    assert (s.time, s.arrival_rps, s.completed_rps) == (1.0, 40.0, 40.0) and s.busy == pytest.approx(0.3)
    # w2 stops reporting a: its counters are forgotten; a variant no longer loaded loses its window
    seen.observe([("w1", report(2.0, 2.0, a=counters(60)))], 2.0, {"a"})
    assert set(seen.last) == {("w1", "a")} and len(seen.windows["a"]) == 2
    seen.observe([("w1", report(3.0, 3.0))], 3.0, set())
    assert seen.windows == {} and seen.last == {}
