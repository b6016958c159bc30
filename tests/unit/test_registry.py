"""Registry: registration, measured vs declared accuracy, name rules, persistence."""

import io

import numpy as np
import onnx
import pytest

from infaas.errors import AlreadyExists, InvalidInput, NotFound
from infaas.registry import MemoryStore, ModelStore, Registry


@pytest.fixture
def registry(tmp_path):
    r = Registry.open(tmp_path)
    yield r
    r.close()


def by_name(models, name):
    return next(m for m in models if m.name == name)


def test_register_measures_accuracy_on_validation_data(registry, digits_models):
    m = by_name(digits_models, "digits-mlp")
    arch, variant = registry.register(m.name, m.task, m.onnx, validation=m.validation, threads=1)
    assert arch.accuracy_source == "measured" and 0.9 < arch.accuracy <= 1.0
    assert variant.accuracy == arch.accuracy and variant.method == "baseline"
    assert variant.name == "digits-mlp.fp32.cpu.t1.b16" and variant.short_name == "fp32.cpu.t1.b16"
    sig = registry.task("digits-classification").signature
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [("input", "FP32", (-1, 64))]
    assert {s.name for s in sig.outputs} == {"label", "probabilities"}


def test_measured_accuracy_matches_an_independent_computation(registry, digits_models):
    import onnxruntime as ort

    m = by_name(digits_models, "digits-nb")
    arch, _ = registry.register(m.name, m.task, m.onnx, validation=m.validation)
    with np.load(io.BytesIO(m.validation)) as npz:
        x, y = npz["inputs"], npz["labels"]
    labels = ort.InferenceSession(m.onnx).run(["label"], {"input": x})[0]
    assert arch.accuracy == pytest.approx(float((labels == y).mean()))


def test_accuracy_spread_of_the_digits_zoo(registry, digits_models):
    accs = [registry.register(m.name, m.task, m.onnx, validation=m.validation)[0].accuracy for m in digits_models]
    assert min(accs) < 0.6 and max(accs) > 0.95


def test_declared_accuracy_without_validation_data(registry, digits_models):
    m = digits_models[0]
    arch, _ = registry.register(m.name, m.task, m.onnx, accuracy=0.5)
    assert (arch.accuracy, arch.accuracy_source) == (0.5, "declared")
    arch2, _ = registry.register("other", m.task, m.onnx)
    assert (arch2.accuracy, arch2.accuracy_source) == (None, "unknown")


def test_names_are_one_namespace(registry, digits_models):
    m = digits_models[0]
    registry.register("a", "t", m.onnx)
    with pytest.raises(AlreadyExists):
        registry.register("a", "t", m.onnx)
    with pytest.raises(AlreadyExists, match="taken by a task"):
        registry.register("t", "t2", m.onnx)
    with pytest.raises(AlreadyExists, match="taken by a architecture"):
        registry.register("b", "a", m.onnx)
    for bad in ("has.dot", "", "-lead", "x" * 65, "sp ace"):
        with pytest.raises(InvalidInput):
            registry.register(bad, "t", m.onnx)


def test_task_signature_is_enforced(registry, digits_models):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    registry.register("a", "digits-classification", digits_models[0].onnx)
    est = LogisticRegression(max_iter=50).fit(np.random.rand(20, 10), np.arange(20) % 2)
    other = to_onnx(
        est, initial_types=[("input", FloatTensorType([None, 10]))], options={id(est): {"zipmap": False}}
    ).SerializeToString()
    with pytest.raises(InvalidInput, match="does not fit task"):
        registry.register("b", "digits-classification", other)


def test_bad_model_and_bad_validation_are_rejected(registry, digits_models):
    with pytest.raises(InvalidInput, match="ONNX"):
        registry.register("a", "t", b"definitely not onnx")
    with pytest.raises(InvalidInput, match="npz"):
        registry.register("a", "t", digits_models[0].onnx, validation=b"nope")
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((3, 64), np.float32))
    with pytest.raises(InvalidInput, match="labels"):
        registry.register("a", "t", digits_models[0].onnx, validation=buf.getvalue())
    assert registry.architecture("a") is None and registry.tasks() == []


def test_persists_across_restart_and_model_files_are_content_addressed(tmp_path, digits_models):
    m = digits_models[1]
    r = Registry.open(tmp_path)
    arch, variant = r.register(m.name, m.task, m.onnx, validation=m.validation)
    r.close()
    r2 = Registry.open(tmp_path)
    assert r2.architecture(m.name) == arch
    assert r2.variant(variant.name) == variant
    path = r2.models.path(arch.model_hash)
    assert path.read_bytes() == m.onnx
    onnx.checker.check_model(str(path))
    from infaas.catalog import Catalog

    catalog = Catalog(r2)  # the server's in-memory view resolves v2 model names
    assert catalog.resolve(m.name, None)[0] == f"architecture {m.name}"
    assert catalog.resolve(m.task, None)[0] == f"task {m.task}"
    assert catalog.resolve(m.name, variant.short_name)[2] == [variant]
    with pytest.raises(NotFound):
        catalog.resolve("nope", None)
    r2.close()


def test_remove_takes_variants_and_empty_task(tmp_path, digits_models):
    r = Registry(MemoryStore(), ModelStore(tmp_path))
    m = digits_models[0]
    r.register("a", "t", m.onnx)
    r.register("b", "t", m.onnx)
    r.remove("a")
    assert r.variants("a") == [] and r.task("t") is not None
    r.remove("b")
    assert r.task("t") is None
    with pytest.raises(NotFound):
        r.remove("b")
