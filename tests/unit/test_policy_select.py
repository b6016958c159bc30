"""Objective-driven selection on hand-built profiles and live states (pure)."""

import pytest

from infaas.policy import Objective, Option, Saturated, Unreachable, predict_ms, select
from infaas.registry import Profile, Variant


def var(name, acc, source="measured", max_batch=16):
    return Variant(
        name=name,
        architecture=name.split(".")[0],
        artifact_hash="h",
        accuracy=acc,
        accuracy_source=source,
        max_batch=max_batch,
        status="ready",
    )


def prof(v, slope, intercept, cost, load_ms=50.0):
    return Profile(
        variant=v.name,
        hardware="cpu",
        fit_slope_ms=slope,
        fit_intercept_ms=intercept,
        cost_per_1k=cost,
        load_time_ms=load_ms,
        latency_p50_ms={1: slope + intercept},
    )


BIG = var("big.fp32", 0.97)  # accurate, slow, dear
MID = var("mid.int8", 0.85, "estimated")  # cheaper, estimated accuracy
TINY = var("tiny.fp32", 0.48)  # cheap and fast, inaccurate
P = {BIG.name: prof(BIG, 2.0, 3.0, 9e-5), MID.name: prof(MID, 0.5, 1.0, 2e-5), TINY.name: prof(TINY, 0.01, 0.1, 1e-6)}


def opts(loaded=("big.fp32", "mid.int8", "tiny.fp32"), in_flight=0):
    return [Option(v, P[v.name], (("w0", in_flight),) if v.name in loaded else ()) for v in (BIG, MID, TINY)]


def test_accuracy_floor_then_cheapest_loaded():
    assert select(Objective(min_accuracy=0.9), opts(), 1, "task t").variant is BIG
    c = select(Objective(min_accuracy=0.8), opts(), 1, "task t")
    assert c.variant is MID and c.worker == "w0"
    assert "cheapest variant meeting min_accuracy 0.8" in c.reason and "0.850 (estimated)" in c.reason
    assert select(Objective(min_accuracy=0.4), opts(), 1, "task t").variant is TINY


def test_estimated_accuracy_counts_only_when_allowed():
    c = select(Objective(min_accuracy=0.8, allow_estimated=False), opts(), 1, "t")
    assert c.variant is BIG


def test_latency_prediction_includes_the_queue_and_the_batch():
    p = P[BIG.name]
    assert predict_ms(p, 16, rows=4, in_flight=0) == pytest.approx(2 * 4 + 3)
    # 20 rows ahead run as the worker runs them: a batch of 16 (35 ms, running: half of it left),
    # then one of 4 (11 ms), then this request's (5 ms)
    assert predict_ms(p, 16, rows=1, in_flight=20) == pytest.approx((2 * 16 + 3) / 2 + (2 * 4 + 3) + 5)
    # BIG alone meets min_accuracy 0.9; with 20 rows queued it cannot make 30 ms: the objective is
    # fine, the load is not (Saturated: a 429 to retry, not a 400 to give up)
    with pytest.raises(Saturated, match="saturated for latency_ms 30: big.fp32 .* predicts 33.5 ms") as exc:
        select(Objective(latency_ms=30, min_accuracy=0.9), opts(in_flight=20), 1, "t")
    assert exc.value.wait_ms == pytest.approx(3.5)
    assert select(Objective(latency_ms=30, min_accuracy=0.9), opts(in_flight=0), 1, "t").variant is BIG
    # 4 ms cannot be met even when idle (BIG's batch of 1 takes 5): unreachable, not saturated
    with pytest.raises(Unreachable, match="latency_ms 4 unreachable for t: fastest is 33.50 ms") as exc:
        select(Objective(latency_ms=4, min_accuracy=0.9), opts(in_flight=20), 1, "t")
    assert not isinstance(exc.value, Saturated)


def test_prediction_follows_the_workers_batching():
    """A worker that runs batches of 4 with two runtime instances drains 20 rows in 5 batches of
    4 (the first running, half done) shared by two instances; predicting batches of max_batch (16)
    says otherwise."""
    p = P[BIG.name]  # 2 ms a row + 3 ms a batch
    assert predict_ms(p, 16, rows=1, in_flight=20, batch=4) == pytest.approx(4.5 * 11 + 5)
    assert predict_ms(p, 16, rows=1, in_flight=20, batch=4, instances=2) == pytest.approx(4.5 * 11 / 2 + 5)
    # selection reads the worker's batching from its live slot: at 40 ms, the 2-instance worker fits
    slots = (("w-one", 20, 4, 1), ("w-two", 20, 4, 2))
    c = select(Objective(latency_ms=40, min_accuracy=0.9), [Option(BIG, P[BIG.name], slots)], 1, "t")
    assert c.worker == "w-two" and c.predicted_ms == pytest.approx(29.75)
    # what else delays it on a worker (other variants' rows on the same cores, the path's overhead)
    slots = (("w-busy", 0, 4, 1, 30.0), ("w-idle", 4, 4, 1, 0.5))
    c = select(Objective(latency_ms=40, min_accuracy=0.9), [Option(BIG, P[BIG.name], slots)], 1, "t")
    assert c.worker == "w-idle" and c.predicted_ms == pytest.approx(11 / 2 + 5 + 0.5)


def test_other_variants_on_the_same_cores_delay_a_request_as_processor_sharing():
    """BIG's batch of one takes 5 ms. Another variant with 30 ms of work in flight on the same
    core shares it: the request finishes ~5 ms later (min(own, other)), not 30 ms later; one with
    2 ms left delays it by 2 ms. A residual correction never takes more than half."""
    p = P[BIG.name]
    assert predict_ms(p, 16, rows=1, in_flight=0, shared=(30.0,)) == pytest.approx(10.0)
    assert predict_ms(p, 16, rows=1, in_flight=0, shared=(30.0, 2.0)) == pytest.approx(12.0)
    assert predict_ms(p, 16, rows=1, in_flight=0, extra_ms=-100.0) == pytest.approx(2.5)
    # selection reads it from the slot: the worker whose core is shared loses to the one that is not
    slots = (("w-shared", 0, 4, 1, 0.0, 1.0, (30.0,)), ("w-alone", 0, 4, 1, 0.0, 1.0, ()))
    c = select(Objective(latency_ms=40, min_accuracy=0.9), [Option(BIG, p, slots)], 1, "t")
    assert c.worker == "w-alone" and c.predicted_ms == pytest.approx(5.0)


def test_the_residual_correction_follows_the_median_not_the_mean():
    from infaas.policy.latency import track_median as _track_median

    values: dict = {}
    for x in [0.3] * 9 * 40 + [5.0] * 40:  # heavy tail: one in ten requests 5 ms
        _track_median(values, "k", x)
    for _ in range(400):
        for x in [0.3] * 9 + [5.0]:
            _track_median(values, "k", x)
    assert values["k"] == pytest.approx(0.3, abs=0.02)  # a mean would sit near 0.77


def test_measured_batch_table_drives_the_prediction_and_a_fit_never_reaches_zero():
    v = var("t.fp32", 0.9)
    # measured: 4 ms at 1, 6 at 4, 10 at 8 (a fit through them crosses zero below batch 1 only, but
    # predicts 3.9 at batch 1 and so on; the table is what was measured)
    table = Profile(
        variant=v.name,
        hardware="cpu",
        fit_slope_ms=0.85,
        fit_intercept_ms=3.2,
        latency_p50_ms={1: 4.0, 4: 6.0, 8: 10.0},
    )
    assert table.predict_ms(1) == pytest.approx(4.0)
    assert table.predict_ms(2) == pytest.approx(4.0 + 2.0 / 3)
    assert table.predict_ms(8) == pytest.approx(10.0)
    assert table.predict_ms(16) == pytest.approx(10.0 + 1.0 * 8)  # the last segment's slope past it
    # a fit with a negative intercept and no table: clamped, never zero or below
    fit_only = Profile(variant=v.name, hardware="cpu", fit_slope_ms=1.0, fit_intercept_ms=-3.0)
    assert fit_only.predict_ms(1) > 0 and fit_only.predict_ms(2) > 0
    assert fit_only.predict_ms(8) == pytest.approx(5.0)
    # noisy measurements where a larger batch read faster: never predicted faster than a smaller one
    noisy = Profile(variant=v.name, hardware="cpu", latency_p50_ms={1: 4.0, 4: 3.5, 8: 9.0})
    assert noisy.predict_ms(4) >= noisy.predict_ms(1)
    # answers are memoised per batch size; a copy with another table is not answered from the memo
    assert table.predict_ms(2) == pytest.approx(4.0 + 2.0 / 3)
    slower = table.model_copy(update={"latency_p50_ms": {1: 8.0, 4: 12.0, 8: 20.0}})
    assert slower.predict_ms(2) == pytest.approx(8.0 + 4.0 / 3) and table.predict_ms(2) == pytest.approx(4.0 + 2.0 / 3)


def test_loaded_preferred_over_cheaper_cold():
    c = select(Objective(min_accuracy=0.8), opts(loaded=("big.fp32",)), 1, "t")
    assert c.variant is BIG and c.worker == "w0"


def test_cold_start_counts_load_time_against_the_objective():
    nothing = opts(loaded=())
    c = select(Objective(min_accuracy=0.8), nothing, 1, "t")
    assert c.variant is MID and c.worker is None and c.predicted_ms == pytest.approx(50 + 1.5)
    assert "cold start" in c.reason
    with pytest.raises(Unreachable, match="fastest is 51.50 ms \\(mid.int8, cold\\)"):
        select(Objective(min_accuracy=0.8, latency_ms=20), nothing, 1, "t")


def test_cost_ceiling():
    assert select(Objective(max_cost=5e-5), opts(), 1, "t").variant is TINY
    with pytest.raises(Unreachable, match=r"max_cost \$5e-05 per 1k unreachable for t: cheapest that meets"):
        select(Objective(max_cost=5e-5, min_accuracy=0.9), opts(), 1, "t")


def test_unreachable_accuracy_names_the_best():
    with pytest.raises(Unreachable, match=r"min_accuracy 0.99 unreachable for task t: best is 0.970 \(big, big.fp32\)"):
        select(Objective(min_accuracy=0.99), opts(), 1, "task t")


def test_batch_larger_than_every_max_batch():
    with pytest.raises(Unreachable, match="no ready variant takes a batch of 32"):
        select(Objective(min_accuracy=0.1), opts(), 32, "t")


def test_cheaper_unloaded_variant_is_loaded_in_the_background_while_the_loaded_one_serves():
    c = select(Objective(min_accuracy=0.8), opts(loaded=("big.fp32",)), 1, "t")
    assert c.variant is BIG and c.worker == "w0"  # served now, from what is loaded
    assert c.prefetch is MID and "loading the cheaper mid.int8" in c.reason
    # nothing cheaper enough: no prefetch
    assert select(Objective(min_accuracy=0.8), opts(), 1, "t").prefetch is None
    # the cheaper one must itself meet the latency objective once loaded
    slow_mid = [Option(MID, prof(MID, 10.0, 5.0, 2e-5)), Option(BIG, P[BIG.name], (("w0", 0),))]
    assert select(Objective(min_accuracy=0.8, latency_ms=10), slow_mid, 1, "t").prefetch is None


def test_no_prefetch_of_a_variant_dearer_than_a_loaded_one_that_is_only_saturated():
    """TINY (cheapest) is loaded but its queue misses 10 ms, so the dearer BIG serves; MID lies
    between them in price. Loading MID would add a variant the controller downgrades back into
    TINY as soon as load falls (the cycle bench/workload's decision log showed every 10 s): no
    prefetch. With TINY idle it serves itself; with TINY not loaded, the cheapest is loaded."""
    tiny = var("tiny.fp32", 0.86)
    p = {**P, tiny.name: prof(tiny, 1.0, 1.0, 1e-6)}

    def options(tiny_slots):
        return [
            Option(BIG, p[BIG.name], (("w0", 0),)),
            Option(MID, p[MID.name], ()),
            Option(tiny, p[tiny.name], tiny_slots),
        ]

    saturated = select(Objective(min_accuracy=0.8, latency_ms=10), options((("w1", 40),)), 1, "t")
    assert saturated.variant is BIG and saturated.prefetch is None
    assert select(Objective(min_accuracy=0.8, latency_ms=10), options((("w1", 0),)), 1, "t").variant is tiny
    assert select(Objective(min_accuracy=0.8, latency_ms=10), options(()), 1, "t").prefetch is tiny


def test_unprofiled_unloaded_variants_cold_start_without_a_latency_objective():
    """A registered variant not profiled yet (and unloaded) serves an accuracy objective by a cold
    start; with a latency objective it cannot be predicted, so the answer is a clear 'unreachable'
    (was: a TypeError, a 500)."""
    unprofiled = [Option(BIG, None, ())]
    c = select(Objective(min_accuracy=0.9), unprofiled, 1, "t")
    assert c.variant is BIG and c.worker is None and c.predicted_ms is None and "not profiled yet" in c.reason
    with pytest.raises(Unreachable, match="no variant is profiled yet"):
        select(Objective(min_accuracy=0.9, latency_ms=50), unprofiled, 1, "t")
    with pytest.raises(Unreachable, match="min_accuracy 0.99 unreachable for t: no variant has a known accuracy"):
        select(Objective(min_accuracy=0.99), [Option(var("x.fp32", None), None, ())], 1, "t")


def test_the_choice_across_runtimes_goes_to_whichever_measures_cheaper():
    """No special case for a runtime: an OpenVINO and an ONNX Runtime form of one graph compete on
    their profiles alone; swap the measurements and the choice swaps."""

    def v(fmt):
        return Variant(
            name=f"m.{fmt}.cpu.t2.b16",
            architecture="m",
            format=f"{'' if fmt.startswith('ov-') else 'onnx-'}{fmt}",
            artifact_hash="h",
            accuracy=0.9,
            accuracy_source="measured",
            status="ready",
        )

    ort, ov = v("int8-static"), v("ov-int8")
    for fast, slow in ((ov, ort), (ort, ov)):
        profiles = {fast.name: prof(fast, 0.2, 0.5, 1e-5), slow.name: prof(slow, 0.4, 0.5, 2e-5)}
        options = [Option(x, profiles[x.name], ()) for x in (ort, ov)]
        c = select(Objective(latency_ms=100, min_accuracy=0.85), options, 1, "task t")
        assert c.variant is fast and c.worker is None  # a cold start of the cheaper one
