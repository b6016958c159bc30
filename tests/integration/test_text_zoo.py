"""A non-classifier: a sentence encoder with three INT64 inputs and dynamic batch and sequence axes,
registered without data (inputs synthesized from its signature), profiled with the cosine fidelity
metric, and served model-less with an objective in that metric."""

import asyncio

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the [zoo] extra")

from infaas.app import BackgroundServer  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.hardware import local_kind  # noqa: E402
from infaas.profiler import profile_architecture  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.zoo import text  # noqa: E402
from tests.conftest import assert_selection_and_admission_agree  # noqa: E402

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


@pytest.fixture(scope="module")
def encoder():
    return text.build(["text-encoder-l2"], steps=60)[0]  # a short distillation: enough to serve and judge


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, encoder):
    data = tmp_path_factory.mktemp("text")
    registry = Registry.open(data)
    arch, _ = registry.register(encoder.name, encoder.task, encoder.onnx, max_batch=8)  # no data at all
    report = asyncio.run(profile_architecture(registry, encoder.name, Settings(data_dir=data), quick=True))
    registry.close()
    return data, arch, report


def test_the_signature_is_read_and_the_metric_follows_the_outputs(profiled):
    data, arch, _ = profiled
    assert [(s.name, s.datatype, s.shape) for s in arch.signature.inputs] == [
        (n, "INT64", (-1, -1)) for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    registry = Registry.open(data)
    assert registry.task("text-embedding").metric == "cosine"  # not a classifier: fidelity to the parent
    registry.close()


def test_variants_are_profiled_with_fidelity_intervals_and_the_sequence_axis(profiled):
    _, _, report = profiled
    assert report.metric == "cosine" and report.kind == local_kind().id
    formats = {v.format for v in report.variants}
    assert {"onnx-fp32", "onnx-int8-dynamic"} <= formats
    assert "onnx-int8-static" in {s.format for s in report.skipped}  # nothing registered to calibrate on
    for v in report.variants:
        p = report.profiles[v.name]
        assert p.metric == "cosine" and p.hardware == local_kind().id and p.samples >= 256
        assert set(p.axis_latency_ms) == {16, 32, 64, 128, 256} and "input_ids[1]" in p.axis
        assert p.axis_latency_ms[256] > p.axis_latency_ms[16]  # longer sequences cost more
        if v.format == "onnx-fp32":
            assert (v.accuracy, v.accuracy_source) == (1.0, "reference") and v.status in ("ready", "rejected")
        elif v.format.startswith("ov-"):  # OpenVINO's forms: their own answers, against the parent's
            assert v.accuracy_source == "measured" and p.accuracy_low <= v.accuracy <= p.accuracy_high <= 1.0
            assert v.accuracy > 0.99 and (v.status == "ready" or v.reason.startswith(("dominated by", "may lose")))
        else:  # INT8 dynamic: judged by its interval like any variant
            assert v.accuracy_source == "measured" and p.accuracy_low <= v.accuracy <= p.accuracy_high <= 1.0
            assert 0.9 < v.accuracy < 1.0 and p.loss_high >= p.loss > 0
            assert v.status == "ready" or v.reason.startswith(("dominated by", "may lose"))
            assert v.params["recipe_text"] and v.params["search"][0]["recipe"] == v.params["recipe_text"]


def test_a_model_less_query_with_a_fidelity_objective(profiled, encoder):
    data, _, report = profiled
    server = BackgroundServer(Settings(data_dir=data, port=0, workers=1, profile_on_register=False)).start()
    try:
        batch = text.tokenize(["Return the number of items in a container.", "Open a socket to a remote host."])
        with Client(server.url) as c:
            r = c.infer("text-embedding", batch, min_accuracy=0.99, latency_ms=2000)
            p = r.parameters
            assert p["accuracy"] >= 0.99 and p["architecture"] == "text-encoder-l2"
            assert r.outputs["last_hidden_state"].shape == (2, batch["input_ids"].shape[1], 128)
            emb = r.outputs["sentence_embedding"]
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
            with pytest.raises(Exception, match="min_accuracy 1.5 unreachable|min_accuracy"):
                c.infer("text-embedding", batch, min_accuracy=1.5)
            rows = {v["name"]: v for v in c.variants("text-encoder-l2")}
            for v in report.variants:
                prof = rows[v.name]["profile"]
                assert prof["hardware"] == local_kind().id and prof["metric"] == "cosine"
                assert prof["samples"] >= 256 and prof["accuracy_low"] is not None
    finally:
        server.stop()


def test_short_sentences_are_costed_short_and_long_ones_refused_up_front(profiled):
    """The request's sequence length enters every prediction: a latency objective between what two
    short sentences and two long ones cost is met for the short ones (selection and the worker's
    admission agree) and refused with the reason, before any work, for the long ones."""
    data, _, report = profiled
    short = text.tokenize(["Open a socket.", "Sort the list."] * 4)  # 8 rows: the model's largest batch
    long = text.tokenize([" ".join(["read the file and count the words"] * 40)] * 8, max_len=256)
    profiles = [p for p in report.profiles.values() if p.status == "ready" and p.axis_latency_ms]
    assert profiles, "the encoder's variants were timed over the sequence axis"
    lo = min(p.cost_ms(8, short["input_ids"].shape[1]) for p in profiles)
    hi = min(p.cost_ms(8, long["input_ids"].shape[1]) for p in profiles)
    assert hi > 4 * lo, (lo, hi)  # the axis timings tell a short sequence from a long one
    objective = (lo * hi) ** 0.5 + 1.5  # between the two, with the serving path's ~1-2 ms on top
    server = BackgroundServer(Settings(data_dir=data, port=0, workers=1, profile_on_register=False)).start()
    try:
        with Client(server.url) as c:
            c.infer("text-embedding", short)  # something loaded (no objective: the default variant)
            r = c.infer("text-embedding", short, latency_ms=objective)
            assert r.parameters["predicted_ms"] < objective, r.parameters
            assert r.outputs["sentence_embedding"].shape == (8, 128)
            with pytest.raises(Exception, match="latency_ms .* unreachable"):
                c.infer("text-embedding", long, latency_ms=objective)
            import httpx

            metrics = httpx.get(server.url + "/metrics").text
            refused = [x for x in metrics.splitlines() if x.startswith("infaas_selected_then_refused_total{")]
            assert all(x.endswith(" 0.0") for x in refused), refused  # the worker agreed with the selection
        for p in profiles:  # and so do their estimates for every variant, idle
            assert_selection_and_admission_agree(server, p.variant)
    finally:
        server.stop()
