"""Variant generation and profiling on the digits zoo: real quantization, real isolated workers."""

import asyncio

import pytest

from infaas.hardware import local_kind
from infaas.profiler import profile_architecture
from infaas.registry import Registry, Variant
from infaas.settings import Settings
from infaas.variants.quantize import DEFAULT_RECIPES, SEARCH_STEPS
from tests.conftest import copy_data_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(tmp_path, digits_data_dir):
    r = Registry.open(copy_data_dir(digits_data_dir, tmp_path / "d"))
    yield r
    r.close()


def run(registry, name, **kw):
    return asyncio.run(
        profile_architecture(registry, name, Settings(data_dir=registry.models.root.parent), quick=True, **kw)
    )


def test_family_of_the_mlp_is_generated_measured_and_judged(registry):
    progress = []
    report = run(registry, "digits-mlp", progress=lambda what, done, total: progress.append((what, done, total)))
    formats = {v.format for v in report.variants}
    assert formats == {"onnx-fp32", "onnx-int8-static", "onnx-int8-dynamic"}
    assert {v.threads for v in report.variants} == {1, 2}
    assert {v.max_batch for v in report.variants} == {1, 4, 8, 16}
    assert [s.format for s in report.skipped if s.format.startswith("onnx-")] == ["onnx-fp16"]  # no GPU here
    # registered without a PyTorch program: PyTorch's formats skipped, said so
    assert all("no PyTorch program registered" in s.reason for s in report.skipped if s.format[:3] == "pt-")
    # OpenVINO does not convert scikit-learn's ai.onnx.ml operators: its formats skipped, said so
    assert all("ai.onnx.ml" in s.reason or "not installed" in s.reason for s in report.skipped if s.format[:3] == "ov-")
    for v in report.variants:
        if v.accuracy_source == "unknown":  # slower than fp32 where evaluated: rejected unevaluated, saying so
            assert (
                v.status == "rejected" and v.reason.startswith("not evaluated: ") and "to beat its parent" in v.reason
            )
            assert report.profiles[v.name].accuracy is None and report.profiles[v.name].samples == 0
            continue
        assert v.status in ("ready", "rejected") and v.accuracy_source in ("measured", "reference")
        p = report.profiles[v.name]
        assert sorted(p.latency_p50_ms) == [b for b in (1, 2, 4, 8, 16) if b <= v.max_batch]
        assert all(p.latency_p99_ms[b] >= p.latency_p50_ms[b] > 0 for b in p.latency_p50_ms)
        assert p.throughput > 0 and p.cost_per_1k > 0 and p.load_time_ms > 0 and p.peak_memory_mb >= 0
        assert p.agreement is not None and p.agreement > 0.9 and p.samples > 0 and p.metric == "top1"
        assert p.accuracy_low <= p.accuracy <= p.accuracy_high and p.loss_high is not None
        assert p.hardware == local_kind().id and p.status == v.status and p.node == "local"
        assert 0.85 < p.accuracy < 1.0
        if v.status == "rejected":
            assert v.reason.startswith(("dominated by", "accuracy"))
    assert any(v.status == "ready" for v in report.variants)
    quantized = [v for v in report.variants if v.format != "onnx-fp32"]
    assert all(v.parent and v.parent.startswith("digits-mlp.fp32") for v in quantized)
    assert progress[-1][0] == "done" and progress[-1][1] == progress[-1][2] == 6


def test_unquantizable_graph_says_why(registry):
    report = run(registry, "digits-tree")
    assert {v.format for v in report.variants} == {"onnx-fp32"}
    reasons = {s.format: s.reason for s in report.skipped}
    assert "no quantizable operators" in reasons["onnx-int8-static"]


def test_a_broken_variant_fails_alone_and_profiles_persist(registry, tmp_path):
    # an artifact that cannot load: its configuration fails, recorded with the reason; the rest go on
    bad_key = registry.models.put_bytes(b"this is not an onnx model", ".onnx")
    from infaas.variants import Artifact, generate_artifacts

    def with_broken(reg, arch, **kw):
        arts, skipped = generate_artifacts(reg, arch, **kw)
        return arts + [Artifact("onnx-broken", bad_key, "test")], skipped

    report = run(registry, "digits-logreg", generate=with_broken)
    broken = [v for v in report.variants if v.format == "onnx-broken"]
    assert broken and all(v.status == "failed" and "profiling failed" in v.reason for v in broken)
    assert any(v.status == "ready" for v in report.variants)

    root = registry.models.root.parent
    registry.close()
    again = Registry.open(root)
    stored = {v.name: v for v in again.variants("digits-logreg")}
    for v in report.variants:
        assert stored[v.name] == v
        if v.status != "failed":
            assert again.profile(v.name) == report.profiles[v.name]
    assert isinstance(next(iter(stored.values())), Variant)
    again.close()


def test_fp16_artifact_keeps_io_types_and_answers_like_fp32(registry):
    """The GPU path's conversion, checked on CPU (no GPU here): same I/O types, same answers."""
    import io

    import numpy as np
    import onnxruntime as ort

    from infaas.variants import generate_artifacts

    arch = registry.architecture("digits-mlp")
    artifacts, skipped = generate_artifacts(registry, arch, gpu=True)
    fp16 = next(a for a in artifacts if a.format == "onnx-fp16")
    assert "onnx-fp16" not in {s.format for s in skipped}
    session = ort.InferenceSession(str(registry.models.path(fp16.key)), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    with np.load(io.BytesIO(registry.models.path(arch.validation_hash).read_bytes())) as npz:
        x = npz["inputs"][:200]
    ref = ort.InferenceSession(str(registry.models.path(arch.model_hash))).run(["label"], {"input": x})[0]
    assert (session.run(["label"], {"input": x})[0] == ref).mean() > 0.98


def test_two_fresh_profiles_keep_and_reject_the_same_variants(tmp_path, digits_data_dir):
    """Evaluation inputs, calibration and quantization are deterministic and timings within the
    dominance margin cannot flip a verdict: two fresh data directories agree variant by variant."""
    reports = []
    for i in range(2):
        r = Registry.open(copy_data_dir(digits_data_dir, tmp_path / f"d{i}"))
        reports.append(run(r, "digits-mlp"))
        r.close()
    a, b = ({v.name: v for v in rep.variants} for rep in reports)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].status, a[name].accuracy) == (b[name].status, b[name].accuracy), (
            a[name].reason,
            b[name].reason,
        )
        pa, pb = reports[0].profiles.get(name), reports[1].profiles.get(name)
        if pa is not None:
            assert (pa.loss, pa.loss_high, pa.samples) == (pb.loss, pb.loss_high, pb.samples)


def test_a_lossy_default_recipe_starts_a_search_that_is_recorded(registry):
    """With a bound no recipe can meet, every recipe is tried within the budget, the sensitivity pass
    runs, and the variants say what was tried and why each failed."""
    report = asyncio.run(
        profile_architecture(
            registry,
            "digits-mlp",
            Settings(
                data_dir=registry.models.root.parent, max_accuracy_drop=0.0, quant_search_s=120, dominance_margin=0.99
            ),
            quick=True,
        )
    )
    log = report.searches["onnx-int8-static"]
    tried = [t for t in log if "params" in t]
    if log[-1]["verdict"].startswith("not searched"):  # slower than fp32 on this CPU: the log says so
        assert "slower than fp32" in log[-1]["verdict"]
        return
    assert [t["params"] for t in tried[: len(SEARCH_STEPS["onnx-int8-static"]) + 1]][1:] == [
        {**DEFAULT_RECIPES["onnx-int8-static"], **step} for step in SEARCH_STEPS["onnx-int8-static"]
    ]
    assert any(t["recipe"] == "(sensitivity)" for t in log)
    assert any(t["params"]["exclude"] for t in tried)  # mixed precision tried
    for v in report.variants:
        if v.format == "onnx-int8-static":
            assert v.status == "rejected" and v.params["search"] == log
            assert "may lose up to" in v.reason or "not evaluated" in v.reason
