"""The simulator's contenders on simulated time: determinism, the real policies called (spies),
static placements that never change, and infaas scaling up for a step of load and back down."""

from __future__ import annotations

import json
import random

import pytest

import infaas.policy.policies as policies_mod
from infaas.registry import Profile, Variant
from infaas.sim import CONTENDERS, Scenario, Simulation, simulate
from infaas.sim.catalog import SimCatalog, parse_synthetic, synthetic
from infaas.sim.fleet import Fleet
from infaas.workload import App


def one_variant(ms: float = 10.0, threads: int = 1, load_ms: float = 200.0) -> SimCatalog:
    """One architecture of task ``t`` with one variant: ``ms`` per request, batch 1."""
    v = Variant(
        name="a.v0",
        architecture="a",
        artifact_hash="h",
        accuracy=0.9,
        accuracy_source="measured",
        max_batch=1,
        threads=threads,
        created_at=0.0,
    )
    p = Profile(
        variant=v.name,
        hardware="sim",
        latency_p50_ms={1: ms},
        latency_p99_ms={1: ms},
        fit_slope_ms=ms,
        throughput=1000 / ms,
        best_batch=1,
        cost_per_1k=1e-5,
        load_time_ms=load_ms,
        peak_memory_mb=100,
        accuracy=0.9,
        accuracy_source="measured",
        measured_at=0.0,
    )
    return SimCatalog({v.name: v}, {v.name: p}, {"a": "t"}, {"a": 0.9})


def poisson(segments: list[tuple[float, float, float]], app: str = "app", seed: int = 0) -> list[tuple[float, str]]:
    rng, rows = random.Random(seed), []
    for start, end, rate in segments:
        t = start
        while (t := t + rng.expovariate(rate)) < end:
            rows.append((t, app))
    return rows


STEP = [(0, 10, 30), (10, 30, 250), (30, 40, 10)]  # 0.3x, 2.5x, 0.1x of one replica's 100 rows/s
APPS = [App("app", "t", {"latency_ms": 100})]


def test_same_seed_same_json_byte_for_byte_and_another_seed_differs():
    cat = synthetic(archs=6, variants=5, tasks=2, seed=3)
    apps = [App("x", "task0", {"latency_ms": 50, "min_accuracy": 0.6}), App("y", "task1", {"latency_ms": 200})]
    trace = sorted(poisson([(0, 20, 40)], "x", 1) + poisson([(0, 20, 30)], "y", 2))
    fleet = Fleet.parse("workers=2,cores=2,max=6")
    runs = [
        json.dumps(simulate(list(CONTENDERS), Scenario(cat, apps, trace, fleet, seed=s, tail_s=10))) for s in (7, 7, 8)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # the seed drives the service times
    out = json.loads(runs[0])
    assert [c["contender"] for c in out["contenders"]] == list(CONTENDERS)
    assert all(c["requests"] == len(trace) for c in out["contenders"])


def test_the_simulator_calls_the_policies_themselves(monkeypatch):
    """Spies around the policy functions the two policies delegate to: the simulator's decisions
    are theirs (each call answered by the real function), not a copy's."""
    calls: dict[str, int] = {}

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("select_sorted", "autoscale", "select_original", "autoscale_original"):
        spy(policies_mod, name)
    cat, trace = one_variant(), poisson(STEP)
    for contender in ("infaas", "infaas-original"):
        Simulation(contender, Scenario(cat, APPS, trace, Fleet.parse("workers=1,max=4"), tail_s=5)).run()
    assert calls["select_sorted"] == calls["select_original"] == len(trace)  # every request asked its policy
    ticks = int(trace[-1][0] + 5)
    assert calls["autoscale"] == calls["autoscale_original"] == ticks  # every controller round


def test_static_contenders_never_load_or_scale_after_the_start():
    cat, trace = one_variant(), poisson(STEP)
    peak = Simulation("static-peak", Scenario(cat, APPS, trace, Fleet.parse("workers=1,max=8"), tail_s=30)).run()
    mean = Simulation("static-mean", Scenario(cat, APPS, trace, Fleet.parse("workers=1,max=8"), tail_s=30)).run()
    # sized from the trace: the peak second's ~280 rows/s need 3 replicas of 95; the mean's ~135 need 2
    assert (peak["workers"], peak["loads"]) == ({"start": 3, "peak": 3, "end": 3}, 3)
    assert (mean["workers"], mean["loads"]) == ({"start": 2, "peak": 2, "end": 2}, 2)
    for r in (peak, mean):
        assert r["actions"] == {} and r["timeline"] == []
    # under-provisioned for the step: the mean's replicas queue what they cannot serve in time (an
    # explicit-variant request carries no objective: it waits up to the default timeout, then is late)
    assert peak["violations"]["late"] < mean["violations"]["late"]
    assert peak["violation_rate"] < mean["violation_rate"]
    assert mean["core_seconds"] < peak["core_seconds"]


def test_infaas_scales_up_for_a_step_and_back_down_after():
    cat, trace = one_variant(), poisson(STEP)
    r = Simulation("infaas", Scenario(cat, APPS, trace, Fleet.parse("workers=1,max=6"), tail_s=60)).run()
    timeline = r["timeline"]  # (t, workers, replicas) each second
    before = [w for t, w, _ in timeline if t < 10]
    during = [rep for t, _, rep in timeline if 15 <= t < 30]
    after = [(w, rep) for t, w, rep in timeline if t >= 80]
    assert set(before) == {1}
    assert min(during) >= 3  # 250 rows/s need three replicas of 95
    assert set(after) == {(1, 1)}  # back to one worker with one replica (kept warm)
    assert r["actions"]["add_worker"] >= 2 and r["actions"]["remove_worker"] == r["actions"]["add_worker"]
    assert r["workers"] == {"start": 1, "peak": max(w for _, w, _ in timeline), "end": 1}
    # it served the step: far fewer violations than one static replica sized for the mean would
    assert r["violation_rate"] < 0.15
    # the decision log: every action with its time and the policy's reason, in order
    log = r["decisions"]
    assert [d["t"] for d in log] == sorted(d["t"] for d in log) and all(d["reason"] for d in log)
    assert {k: sum(1 for d in log if d["kind"] == k) for k in r["actions"]} == r["actions"]
    first_up = next(d for d in log if d["kind"] == "add_worker")
    assert 10 <= first_up["t"] < 20 and "overloaded" in first_up["reason"]


def test_bad_inputs_name_the_field_or_line():
    cat = one_variant()
    with pytest.raises(ValueError, match="trace line 3: unknown app 'other'"):
        simulate(["infaas"], Scenario(cat, APPS, [(0.0, "app"), (1.0, "other")], Fleet()))
    with pytest.raises(ValueError, match=r"trace line 3: time 0.5 comes before the previous line's 1.0"):
        simulate(["infaas"], Scenario(cat, APPS, [(1.0, "app"), (0.5, "app")], Fleet()))
    with pytest.raises(ValueError, match="task 'nope' is not in the catalog"):
        simulate(["infaas"], Scenario(cat, [App("app", "nope")], [], Fleet()))
    with pytest.raises(ValueError, match="no variant of task 't' runs on 1 core"):
        simulate(["infaas"], Scenario(one_variant(threads=2), APPS, [(0.0, "app")], Fleet.parse("cores=1")))
    with pytest.raises(ValueError, match="unknown contender 'best'"):
        Simulation("best", Scenario(cat, APPS, [], Fleet()))
    with pytest.raises(ValueError, match="--fleet: workers must be a whole number"):
        Fleet.parse("workers=0")
    with pytest.raises(ValueError, match="--fleet: 'gpus=2' is not one of"):
        Fleet.parse("gpus=2")
    with pytest.raises(ValueError, match="--fleet: cores must be a number"):
        Fleet.parse("cores=many")
    with pytest.raises(ValueError, match="--synthetic: archs must be at least 1"):
        parse_synthetic("archs=0")
    with pytest.raises(ValueError, match="--synthetic: 'size=3' is not key=value"):
        parse_synthetic("size=3")


def test_synthetic_catalog_names_its_tasks_and_spreads_its_variants():
    cat = synthetic(**parse_synthetic("archs=20,variants=4,tasks=5,seed=1"))
    assert cat.task_names == [f"task{i}" for i in range(5)]
    assert len(cat.variants) == 80 and len(cat.of_task("task0")) == 16
    assert {v.format for v in cat.variants.values()} >= {"onnx-fp32", "onnx-int8-static"}
    for v in cat.variants.values():
        p = cat.profiles[v.name]
        assert max(p.latency_p50_ms) <= v.max_batch and all(
            p.latency_p99_ms[b] > p.latency_p50_ms[b] for b in p.latency_p50_ms
        )
    assert synthetic(archs=20, variants=4, tasks=5, seed=1).variants == cat.variants  # seeded


def test_a_fleet_floor_below_its_start_lets_infaas_give_workers_back():
    cat, trace = one_variant(), poisson([(0, 30, 20)])
    kept = Simulation("infaas", Scenario(cat, APPS, trace, Fleet.parse("workers=3"), tail_s=30)).run()
    freed = Simulation("infaas", Scenario(cat, APPS, trace, Fleet.parse("workers=3,min=1"), tail_s=30)).run()
    assert kept["workers"]["end"] == 3 and freed["workers"]["end"] == 1
    assert freed["core_seconds"] < kept["core_seconds"]
    with pytest.raises(ValueError, match=r"--fleet: min \(4\) is more than the workers it starts with \(3\)"):
        Fleet.parse("workers=3,min=4")


CSV_HEAD = "task,architecture,variant,hardware,batch,p50_ms,p99_ms,accuracy,memory_mb,load_ms,threads\n"
CSV_ROWS = """\
vision,big,big.fp32,cpu,1,38,52,0.76,180,900,1
vision,big,big.fp32,cpu,4,130,170,0.76,180,900,1
vision,big,big.fp16,gpu,1,2.1,3.0,0.76,400,2500,1
vision,big,big.fp16,gpu,8,3.4,4.6,0.76,400,2500,1
vision,small,small.fp32,cpu,1,6,9,0.70,40,300,1
"""


def test_a_catalog_csv_with_a_cpu_and_a_gpu_pool(tmp_path):
    from infaas.sim.catalog import from_csv

    path = tmp_path / "catalog.csv"
    path.write_text(CSV_HEAD + CSV_ROWS)
    fleet = Fleet.parse("cpu:workers=1,max=3;gpu:workers=1,max=2", price_core_hour=0.04, price_gpu_hour=2.0)
    cat = from_csv(path, fleet.price_for)
    assert sorted(cat.variants) == ["big.fp16@gpu", "big.fp32@cpu", "small.fp32@cpu"]
    assert cat.kind_of("big.fp16@gpu") == "gpu" and cat.variants["big.fp16@gpu"].max_batch == 8
    # cost per 1000 from the pool's price and the best batch's throughput (8 rows in 3.4 ms on the GPU)
    assert cat.profiles["big.fp16@gpu"].cost_per_1k == pytest.approx(2.0 / 3600 / (8 / 3.4e-3) * 1000)
    apps = [
        App("strict", "vision", {"latency_ms": 20, "min_accuracy": 0.75}),
        App("loose", "vision", {"latency_ms": 500}),
    ]
    trace = sorted(poisson([(0, 20, 30)], "strict", 1) + poisson([(0, 20, 10)], "loose", 2))
    out = simulate(["infaas", "static-peak"], Scenario(cat, apps, trace, fleet, tail_s=5))
    ours, static = out["contenders"]
    # only the GPU variant meets 20 ms at 0.75; the loose app takes the cheapest that meets 500 ms
    assert set(ours["apps"]["strict"]["variants"]) == {"big.fp16@gpu"}
    assert set(ours["apps"]["loose"]["variants"]) <= {"small.fp32@cpu", "big.fp16@gpu"}
    assert ours["violation_rate"] < 0.02
    assert set(ours["pools"]) == {"cpu", "gpu"} and ours["pools"]["gpu"]["cost_usd"] > 0
    assert ours["cost_usd"] == pytest.approx(
        ours["pools"]["cpu"]["cost_usd"] + ours["pools"]["gpu"]["cost_usd"], abs=2e-6
    )
    # the hand-picked variant is the most accurate architecture's CPU fp32: too slow for 20 ms
    assert set(static["apps"]["strict"]["variants"]) <= {"big.fp32@cpu"}
    assert static["pools"]["gpu"]["workers"] == 0 and static["apps"]["strict"]["violations"] > 0.9 * 600


def test_bad_catalog_rows_and_pools_name_the_line_or_field(tmp_path):
    from infaas.sim.catalog import from_csv

    path = tmp_path / "c.csv"
    cases = [
        ("task,variant\nx,y\n", "missing column(s) architecture, hardware"),
        (
            CSV_HEAD + "vision,big,big.fp32,cpu,1,38,20,0.76,180,900,1\n",
            "c.csv:2: p50_ms 38 and p99_ms 20 must satisfy",
        ),
        (
            CSV_HEAD + CSV_ROWS + "vision,big,big.fp32,cpu,8,300,400,0.74,180,900,1\n",
            "c.csv:7: big.fp32 on cpu has another",
        ),
        (CSV_HEAD + "vision,big,big.fp32,cpu,one,38,52,0.76,180,900,1\n", "c.csv:2: invalid literal"),
        (CSV_HEAD + CSV_ROWS + "audio,big,x,cpu,1,1,1,,1,1,1\n", "c.csv:7: architecture big is already of task vision"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ValueError) as exc:
            from_csv(path, lambda kind: 1.0)
        assert message in str(exc.value)
    with pytest.raises(ValueError, match="pools of distinct hardware kinds"):
        Fleet.parse("cpu:workers=1;cpu:workers=2")
    with pytest.raises(ValueError, match="--fleet gpu: max must be a whole number"):
        Fleet.parse("cpu:workers=1;gpu:max=1.5")
    path.write_text(CSV_HEAD + CSV_ROWS)
    cat = from_csv(path, lambda kind: 1.0)
    with pytest.raises(ValueError, match="the variants of task 'vision' run on cpu, gpu; the fleet has no such pool"):
        simulate(["infaas"], Scenario(cat, [App("a", "vision")], [], Fleet.parse("tpu:workers=1")))


def test_the_oracle_bound_by_hand():
    """One app (10 ms, accuracy >= 0.8) and three variants: B is too inaccurate; C's batch of 8 is
    too slow for 10 ms and its batch of 1 costs 2 threads x 3 ms = 6 core-ms; A's batch of 4 costs
    8 ms / 4 = 2 core-ms a request: the cheapest. 3 + 5 requests in two seconds: 16 core-ms."""
    from infaas.sim.oracle import oracle

    def variant(name, acc, threads, p50):
        v = Variant(name=name, architecture=name, artifact_hash="h", accuracy=acc, max_batch=max(p50), threads=threads)
        return v, Profile(variant=name, hardware="sim", latency_p50_ms=p50, accuracy=acc)

    pairs = [
        variant("A", 0.9, 1, {1: 4.0, 4: 8.0}),
        variant("B", 0.7, 1, {1: 0.5}),
        variant("C", 0.95, 2, {1: 3.0, 8: 12.0}),
    ]
    cat = SimCatalog({v.name: v for v, _ in pairs}, {v.name: p for v, p in pairs}, {"A": "t", "B": "t", "C": "t"})
    apps = [App("x", "t", {"latency_ms": 10, "min_accuracy": 0.8}), App("y", "t", {"min_accuracy": 0.99})]
    trace = [(0.1, "x"), (0.2, "x"), (0.9, "x"), (1.0, "x"), (1.1, "x"), (1.5, "x"), (1.6, "x"), (1.7, "y"), (1.8, "x")]
    fleet = Fleet.parse("workers=1,cores=2,price=3.6")  # $3.6 a core-hour: $1e-3 a core-second
    bound = oracle(cat, apps, trace, fleet)
    assert bound["apps"]["x"] == {"variant": "A", "batch": 4, "core_ms": 2.0}
    assert bound["apps"]["y"] is None and bound["unservable"] == 1  # nothing reaches 0.99
    assert bound["core_seconds"] == pytest.approx(0.016)
    assert bound["cost_usd"] == pytest.approx(16e-6)
    assert bound["per_second_usd"] == pytest.approx([6e-6, 10e-6])
    # a worker of one core: C (2 threads) no longer runs as profiled; A still wins
    assert oracle(cat, apps, trace, Fleet.parse("cores=1,price=3.6"))["apps"]["x"]["variant"] == "A"


def test_static_sizing_packs_replicas_into_many_core_workers():
    from infaas.sim.static import static_plan

    cat = one_variant(ms=10.0)  # 100 rows/s a replica, 95 planned
    v, p = cat.variants["a.v0"], cat.profiles["a.v0"]
    apps = [App("x", "t"), App("y", "t")]
    chosen = {"x": (v, p), "y": (v, p)}
    # 950 + 285 rows/s: 10 + 3 replicas, 13 cores of work: one core a worker needs 13 workers,
    # 16 cores a worker still needs 10 (one replica of a variant per worker)
    assert static_plan(apps, {"x": 950, "y": 285}, chosen, 64) == (
        13,
        pytest.approx(13.0),
        {"x": ("a.v0", 10), "y": ("a.v0", 3)},
    )
    workers, _, plan = static_plan(apps, {"x": 950, "y": 285}, chosen, 64, cores=16)
    assert workers == 10 and plan == {"x": ("a.v0", 10), "y": ("a.v0", 3)}
    assert static_plan(apps, {"x": 95, "y": 10}, chosen, 64, cores=16)[0] == 1


@pytest.mark.parametrize("contender", ["infaas", "static-peak"])
def test_the_serving_path_overhead_adds_to_every_answer_and_to_what_is_late(contender):
    """A 10-ms variant at 30 % load against a 14-ms objective: without the serving path almost every
    request makes it; with 6 ms of path (3 each way) the same requests come back 6 ms later and the
    queued ones miss."""
    cat, trace = one_variant(ms=10.0), poisson([(0, 20, 30)])
    apps = [App("app", "t", {"latency_ms": 14})]
    fleet = Fleet.parse("workers=1,max=1")
    bare = Simulation(contender, Scenario(cat, apps, trace, fleet, tail_s=5)).run()
    path = Simulation(contender, Scenario(cat, apps, trace, fleet, tail_s=5, overhead_ms=6.0)).run()
    assert bare["latency_ms"]["p50"] == pytest.approx(10.0, abs=0.5)
    assert path["latency_ms"]["p50"] == pytest.approx(16.0, abs=0.5)
    assert path["violation_rate"] > bare["violation_rate"] + 0.5
    with pytest.raises(ValueError, match="overhead_ms"):
        simulate([contender], Scenario(cat, apps, trace, fleet, overhead_ms=-1))
