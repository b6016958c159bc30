"""The INT8 generator's recipes and per-node sensitivity on the digits zoo (real ONNX Runtime
quantization, real sessions)."""

import onnx
import pytest

from infaas.registry import Registry
from infaas.variants.quantize import DEFAULT_RECIPES, Quantizer
from infaas.zoo import digits

FMT = "onnx-int8-static"


@pytest.fixture
def registry(tmp_path):
    """digits-conv, narrow (a Conv+Relu stack and a read-out), with its calibration data."""
    r = Registry.open(tmp_path / "d")
    m = digits.heavy(channels=32, layers=3)
    r.register(m.name, m.task, m.onnx, validation=m.validation, calibration=m.calibration, max_batch=16, threads=1)
    yield r
    r.close()


def quantized_tensors(registry, key):
    model = onnx.load(str(registry.models.path(key)))
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def weights_quantized(registry, key, node_name):
    nodes = onnx.load(str(registry.models.path(key))).graph.node
    dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    (node,) = [n for n in nodes if n.name == node_name]
    return node.input[1] in dq


def scales(registry, key):
    model = onnx.load(str(registry.models.path(key)))
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: float(consts[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in consts and consts[n.input[1]].size == 1
    }


def test_each_calibration_method_sets_its_own_activation_ranges(registry):
    """Entropy must search ranges (ONNX Runtime's quantize_static alone would give MinMax's: its
    Entropy defaults search 128 bins into 128), so the three methods make three different graphs."""
    arch = registry.architecture("digits-conv")
    with Quantizer(registry, arch) as qz:
        made = {
            m: qz.quantize(FMT, {**DEFAULT_RECIPES[FMT], "calibrate": m}) for m in ("MinMax", "Entropy", "Percentile")
        }
    assert len({a.key for a in made.values()}) == 3
    minmax, entropy = scales(registry, made["MinMax"].key), scales(registry, made["Entropy"].key)
    shared = minmax.keys() & entropy.keys()
    assert shared
    # entropy clips outliers: no activation range wider than MinMax's, and some narrower
    assert all(entropy[t] <= minmax[t] * 1.0001 for t in shared)
    assert any(entropy[t] < minmax[t] * 0.99 for t in shared)
    assert made["Entropy"].params["recipe_text"].startswith("Entropy")


def test_sensitivity_ranks_fused_groups_and_exclusion_keeps_them_in_fp32(registry):
    arch = registry.architecture("digits-conv")
    with Quantizer(registry, arch) as qz:
        default = qz.quantize(FMT, dict(DEFAULT_RECIPES[FMT]))
        ranking = qz.sensitivity(FMT, default)
        float_nodes = {n.name: n for n in onnx.load(str(qz.pre())).graph.node}
        assert ranking and all(score > 0 for _, score in ranking)
        assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
        quantized = quantized_tensors(registry, default.key)
        for names, _ in ranking:
            assert all(n in float_nodes for n in names)
            assert float_nodes[names[-1]].output[0] in quantized  # a group ends at a quantized tensor
        # a Conv and its Relu run as one integer kernel: they are one group
        assert any([float_nodes[n].op_type for n in names] == ["Conv", "Relu"] for names, _ in ranking)
        top = ranking[0][0]
        mixed = qz.quantize(FMT, {**DEFAULT_RECIPES[FMT], "exclude": list(top)})
    # the group's Conv runs in float: its weights are no longer quantized (its input may still come
    # through a Q/DQ pair that the previous, quantized, group's output needs for its other readers)
    convs = [n for n in top if float_nodes[n].op_type == "Conv"]
    assert convs
    assert all(weights_quantized(registry, default.key, n) for n in convs)
    assert not any(weights_quantized(registry, mixed.key, n) for n in convs)
    assert mixed.method == "int8-mixed" and mixed.params["recipe"]["exclude"] == list(top)


def test_the_search_keeps_a_recipe_only_when_it_meets_the_bound_and_beats_fp32(registry):
    """As on a CPU without VNNI: uint8 weights keep the accuracy but run slower than fp32, the other
    single changes stay lossy, so mixed precision must run (seeded by the least lossy recipe that
    is faster than fp32) and its winner is kept. Timings and losses are scripted per recipe here;
    quantization and the sensitivity pass are real."""
    import asyncio

    from infaas.profiler import quality as Q
    from infaas.profiler.measure import Measurement
    from infaas.profiler.search import search_recipes as _search
    from infaas.settings import Settings
    from infaas.variants.artifact import Artifact

    arch = registry.architecture("digits-conv")

    def scripted(recipe):  # (rows/s, loss bound); fp32 runs at 1000 rows/s
        if recipe.get("exclude"):
            return 1500.0, 0.004
        if recipe.get("weight") == "QUInt8":
            return 600.0, 0.001  # accurate, slower than fp32
        return 2000.0, 0.05 if recipe.get("calibrate") == "Percentile" else 0.08

    async def measure(m):
        rows_s = 1000.0 if m.artifact.format == "onnx-fp32" else scripted(m.artifact.params["recipe"])[0]
        m.result = {"latency_ms": {1: [1000.0 / rows_s]}}

    def quality(m):
        loss = scripted(m.artifact.params["recipe"])[1]
        return Q.Quality(0.9 - loss, 0.9 - loss, 0.9, 1024, loss, loss, "estimated", "scripted")

    with Quantizer(registry, arch) as qz:
        default = Measurement(qz.quantize(FMT, dict(DEFAULT_RECIPES[FMT])), "cpu", 1, evaluate=True)
    parent = Measurement(Artifact("onnx-fp32", arch.model_hash, "baseline", {}), "cpu", 1)
    settings = Settings(data_dir=registry.models.root.parent, max_accuracy_drop=0.02, quant_search_s=120)

    async def go():
        await measure(default)
        await measure(parent)
        return await _search(
            FMT, default, parent, quality(default), registry, arch, settings, measure, quality, lambda _msg: None
        )

    best, q, log = asyncio.run(go())
    verdicts = {t["recipe"]: t["verdict"] for t in log}
    slow = [v for r, v in verdicts.items() if "U8U8" in r]
    assert slow and slow[0].startswith("meets the bound but no faster than fp32 (600 vs 1000 rows/s)")
    assert any(t["recipe"] == "(sensitivity)" for t in log)
    assert best.artifact.params["recipe"]["exclude"] and best.artifact.params["recipe"]["weight"] == "QInt8"
    assert q.loss_high == 0.004 and log[-1]["verdict"].startswith("kept")
