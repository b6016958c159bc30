"""Judging profiled variants: accuracy bound and dominance, with reasons (pure, no processes)."""

import pytest

from infaas.profiler import linear_fit
from infaas.profiler.verdict import judge as _judge
from infaas.registry import Profile, Variant
from infaas.settings import Settings
from infaas.variants import batch_sizes
from infaas.variants.generate import powers_of_two


def variant(name, threads=1, max_batch=16, acc=0.9):
    return Variant(
        name=f"a.{name}",
        architecture="a",
        artifact_hash="h",
        threads=threads,
        max_batch=max_batch,
        accuracy=acc,
        accuracy_source="measured",
        status="ready",
    )


def profile(v, p50_1, throughput, cost, acc=None, loss_high=0.0):
    return Profile(
        variant=v.name,
        hardware="cpu",
        latency_p50_ms={1: p50_1},
        throughput=throughput,
        cost_per_1k=cost,
        accuracy=v.accuracy if acc is None else acc,
        accuracy_source="measured",
        loss=loss_high / 2,
        loss_high=loss_high,
        samples=1000,
    )


def judge(variants, profiles, drop=0.02, margin=0.2, floor=0.05):
    settings = Settings(max_accuracy_drop=drop, dominance_margin=margin, timing_floor_ms=floor)
    return {v.name: v for v in _judge(variants, profiles, settings)}


def test_dominated_variant_is_rejected_with_the_numbers():
    fast, slow = variant("fp32"), variant("dyn")
    out = judge([fast, slow], {fast.name: profile(fast, 2.0, 500, 1e-6), slow.name: profile(slow, 6.0, 150, 3e-6)})
    assert out["a.fp32"].status == "ready"
    assert out["a.dyn"].status == "rejected"
    assert "dominated by a.fp32" in out["a.dyn"].reason and "p50@1 2 vs 6 ms" in out["a.dyn"].reason


def test_trade_offs_survive():
    # t2: faster, but dearer per inference than t1; neither dominates
    t1, t2 = variant("t1", threads=1), variant("t2", threads=2)
    out = judge([t1, t2], {t1.name: profile(t1, 5.0, 200, 1e-6), t2.name: profile(t2, 3.0, 300, 1.3e-6)})
    assert out["a.t1"].status == out["a.t2"].status == "ready"


def test_a_variant_is_never_dominated_by_one_that_needs_more_cores():
    """A 2-thread variant twice as fast at the same cost per inference would reject the 1-thread
    one, leaving 1-core workers nothing that runs as profiled at that max batch (the overload
    tests then loaded a max-batch-8 variant and refused batches of 16). The other way is fine."""
    t1, t2 = variant("t1", threads=1), variant("t2", threads=2)
    out = judge([t1, t2], {t1.name: profile(t1, 0.8, 1300, 9e-6), t2.name: profile(t2, 0.5, 2600, 9e-6)})
    assert out["a.t1"].status == out["a.t2"].status == "ready"
    out = judge([t1, t2], {t1.name: profile(t1, 0.5, 2600, 9e-6), t2.name: profile(t2, 0.8, 1300, 9e-6)})
    assert out["a.t1"].status == "ready" and out["a.t2"].status == "rejected"


def test_more_accurate_but_slower_survives_and_different_max_batch_is_not_compared():
    acc, fast = variant("acc", acc=0.95), variant("fast", acc=0.90)
    small = variant("small", max_batch=1, acc=0.9)  # worse than both, but alone at max batch 1
    out = judge(
        [acc, fast, small],
        {
            acc.name: profile(acc, 5.0, 200, 2e-6),
            fast.name: profile(fast, 2.0, 500, 1e-6),
            small.name: profile(small, 9.0, 100, 9e-6),
        },
        drop=0.1,
    )
    assert {n: v.status for n, v in out.items()} == {"a.acc": "ready", "a.fast": "ready", "a.small": "ready"}


def test_the_upper_bound_of_the_loss_is_judged_not_the_estimate():
    base, q, close = variant("fp32", acc=0.90), variant("int8", acc=0.89), variant("int8b", acc=0.89)
    out = judge(
        [base, q, close],
        {
            base.name: profile(base, 4.0, 250, 1e-6),
            q.name: profile(q, 1.0, 900, 3e-7, loss_high=0.021),  # estimate 0.0105
            close.name: profile(close, 1.0, 900, 3e-7, loss_high=0.019),
        },
    )
    assert out["a.int8"].status == "rejected"
    assert "may lose up to 0.0210 top1" in out["a.int8"].reason and "bound of 0.02" in out["a.int8"].reason
    assert out["a.int8b"].status == "ready"


def test_timings_within_the_margin_are_noise_not_dominance():
    # 15 % faster and cheaper at equal accuracy: inside a 20 % margin, both stay; outside a 10 % one, not
    a, b = variant("a"), variant("b")
    profiles = {a.name: profile(a, 2.0, 500, 1.0e-6), b.name: profile(b, 2.3, 435, 1.15e-6)}
    assert {v.status for v in judge([a, b], profiles).values()} == {"ready"}
    out = judge([a, b], profiles, margin=0.1, floor=0.0)
    assert out["a.a"].status == "ready" and out["a.b"].status == "rejected" and "margin 10%" in out["a.b"].reason


def test_microsecond_timings_within_the_noise_floor_are_ties():
    # 15 vs 21 µs a call: 40 % apart, but inside the 50 µs noise of one timed call, and so is the cost
    # that follows from them: every verdict is a tie, the same on every run
    t1, t2, int8 = variant("t1", threads=1), variant("t2", threads=2), variant("int8", threads=1)
    profiles = {
        t1.name: profile(t1, 0.015, 1 / 0.015 * 1000, 1.0e-9),
        t2.name: profile(t2, 0.021, 1 / 0.021 * 1000, 2.8e-9),
        int8.name: profile(int8, 0.021, 1 / 0.021 * 1000, 1.4e-9),
    }
    out = judge([t1, t2, int8], profiles)
    assert {v.status for v in out.values()} == {"ready"}
    assert judge([t1, int8], profiles, floor=0.0)["a.int8"].status == "rejected"  # without the floor: noise decides


def test_failed_variants_pass_through_untouched():
    broken = variant("broken").model_copy(update={"status": "failed", "reason": "profiling failed: boom"})
    assert judge([broken], {})["a.broken"].reason == "profiling failed: boom"


def test_linear_fit_and_sizes():
    slope, intercept = linear_fit([1, 2, 4, 8], [3.0, 5.0, 9.0, 17.0])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    assert linear_fit([1], [4.0]) == (4.0, 0.0)
    assert batch_sizes(16) == [1, 4, 8, 16] and batch_sizes(12) == [1, 4, 8, 12]
    assert powers_of_two(2) == [1, 2] and powers_of_two(6) == [1, 2, 4, 6]


def test_an_estimated_accuracy_cannot_displace_a_declared_one():
    fp32 = variant("fp32").model_copy(update={"accuracy_source": "declared"})
    int8 = variant("int8").model_copy(update={"accuracy_source": "estimated"})
    p32 = profile(fp32, 5.0, 200, 2e-6).model_copy(update={"accuracy_source": "declared"})
    p8 = profile(int8, 2.0, 500, 1e-6).model_copy(update={"accuracy_source": "estimated"})
    out = judge([fp32, int8], {fp32.name: p32, int8.name: p8})
    assert out["a.fp32"].status == out["a.int8"].status == "ready"


def test_gpu_plans_fp32_and_fp16_on_cuda_besides_the_cpu_family():
    from infaas.registry import Architecture, Signature, TensorSpec
    from infaas.variants import Artifact, plan_variants

    sig = Signature(
        inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),),
    )
    arch = Architecture(name="a", task="t", signature=sig, model_hash="h", max_batch=8)
    arts = [
        Artifact("onnx-fp32", "k1", "baseline"),
        Artifact("onnx-int8-static", "k2", "int8-static"),
        Artifact("onnx-fp16", "k3", "fp16"),
    ]
    cpu_only = plan_variants(arch, arts, max_threads=2, max_batch=8)
    assert {(v.format, v.provider) for v in cpu_only} == {("onnx-fp32", "cpu"), ("onnx-int8-static", "cpu")}
    assert len(cpu_only) == 2 * 2 * 3  # formats x threads {1,2} x max batch {1,4,8}
    with_gpu = plan_variants(arch, arts, max_threads=2, max_batch=8, gpu=True)
    cuda = {(v.format, v.threads) for v in with_gpu if v.provider == "cuda"}
    assert cuda == {("onnx-fp32", 1), ("onnx-fp16", 1)}
    assert "a.fp16.cuda.t1.b8" in {v.name for v in with_gpu}
    assert all(v.parent == "a.fp32.cpu.t2.b8" for v in with_gpu if v.name != "a.fp32.cpu.t2.b8")


def test_a_count_worse_by_less_than_the_margin_still_protects_a_trade_off():
    # two threads: 1.7x the throughput but 15 % dearer per inference; one thread stays (cheaper)
    t1, t2 = variant("t1", threads=1), variant("t2", threads=2)
    profiles = {t1.name: profile(t1, 0.6, 2142, 6.0e-6), t2.name: profile(t2, 0.577, 3670, 6.9e-6)}
    profiles = {k: p.model_copy(update={"best_batch": 8}) for k, p in profiles.items()}
    assert {v.status for v in judge([t1, t2], profiles).values()} == {"ready"}
