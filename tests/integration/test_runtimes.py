"""Variants across runtimes: OpenVINO's formats beside ONNX Runtime's, generated, profiled, judged
and served by the same code (digits-conv, which OpenVINO converts; the scikit-learn digits, which it
cannot)."""

from __future__ import annotations

import sys

import httpx
import numpy as np
import pytest

from infaas.app import BackgroundServer
from infaas.errors import RuntimeContractError
from infaas.hardware import local_kind
from infaas.registry import Registry
from infaas.registry.types import runtime_of
from infaas.settings import Settings
from infaas.variants import generate_artifacts
from infaas.variants.quantize import nncf_overflow_fix
from infaas.worker.runtime import make_runtime
from infaas.zoo import digits
from tests.conftest import copy_data_dir, digits_body

openvino = pytest.importorskip("openvino", reason="the [openvino] extra (make install-dev installs it)")
pytestmark = pytest.mark.slow


def bf16_kernels() -> bool:
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_variants_stand_beside_ort_ones_each_with_a_verdict(heavy_dir, tmp_path):
    registry = Registry.open(copy_data_dir(heavy_dir, tmp_path / "d"))
    try:
        variants = registry.variants("digits-conv")
        formats = {v.format for v in variants}
        assert {"onnx-fp32", "onnx-int8-static", "ov-fp32", "ov-int8", "ov-int8-nncf"} <= formats
        assert ("ov-bf16" in formats) == bf16_kernels()
        nncf = next(v for v in variants if v.format == "ov-int8-nncf")  # NNCF's own INT8 graph, stored apart
        assert (
            nncf.method == "nncf-int8"
            and nncf.artifact_hash != next(v for v in variants if v.format == "ov-int8").artifact_hash
        )
        assert (nncf.params["overflow_fix"], nncf.params["overflow_fix_why"]) == nncf_overflow_fix(local_kind())
        assert nncf.params["quantizer"] == "nncf" and nncf.params["calibration_rows"] == 128
        ov = [v for v in variants if runtime_of(v.format)[0] == "openvino"]
        assert "digits-conv.ov-fp32.cpu.t1.b16" in {v.name for v in ov}  # the name carries the runtime
        fp32 = next(v for v in variants if v.format == "onnx-fp32")
        for v in ov:
            assert v.status in ("ready", "rejected"), (v.name, v.status, v.reason)
            assert v.status == "ready" or v.reason  # a rejection says why
            profile = registry.profile(v.name)
            assert profile is not None and profile.throughput > 0 and profile.load_time_ms > 0
            assert v.accuracy is not None and v.accuracy_source == "measured"
            if v.format == "ov-fp32":  # the same graph at f32: the same answers, within float noise
                assert abs(v.accuracy - fp32.accuracy) <= 0.01
        # judged by the same rules: an ORT variant may be dominated by an OpenVINO one, or the reverse
        ready = [v for v in variants if v.status == "ready"]
        assert ready
    finally:
        registry.close()


def test_a_graph_openvino_cannot_convert_skips_its_formats_with_the_reason(tmp_path):
    registry = Registry.open(tmp_path / "d")
    try:
        mlp = next(m for m in digits.build() if m.name == "digits-mlp")
        registry.register(mlp.name, mlp.task, mlp.onnx, validation=mlp.validation, max_batch=16, threads=1)
        artifacts, skipped = generate_artifacts(registry, registry.architecture("digits-mlp"))
        assert all(runtime_of(a.format)[0] == "onnxruntime" for a in artifacts)
        reasons = {s.format: s.reason for s in skipped}
        for fmt in ("ov-fp32", "ov-bf16", "ov-int8", "ov-int8-nncf"):
            assert "OpenVINO cannot convert this graph" in reasons[fmt] and "ai.onnx.ml" in reasons[fmt], reasons
        # ORT only, by setting: no OpenVINO formats and nothing said about them
        _, only_ort = generate_artifacts(registry, registry.architecture("digits-mlp"), runtimes=("onnxruntime",))
        assert not [s for s in only_ort if s.format.startswith("ov-")]
    finally:
        registry.close()


def test_without_openvino_installed_the_formats_are_skipped_and_a_load_says_why(tmp_path, monkeypatch):
    registry = Registry.open(tmp_path / "d")
    try:
        conv = digits.heavy(channels=16, layers=1)
        registry.register(conv.name, conv.task, conv.onnx, validation=conv.validation, max_batch=16, threads=1)
        path = registry.models.path(registry.architecture(conv.name).model_hash)
        monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
        artifacts, skipped = generate_artifacts(registry, registry.architecture(conv.name))
        assert {a.format for a in artifacts} >= {"onnx-fp32"} and not any(a.format.startswith("ov-") for a in artifacts)
        assert all("not installed" in s.reason for s in skipped if s.format.startswith("ov-"))
        with pytest.raises(RuntimeContractError, match="OpenVINO is not installed"):
            make_runtime(path, "ov-fp32").load()
    finally:
        registry.close()


def test_without_nncf_its_format_alone_is_skipped_with_the_reason(tmp_path, monkeypatch):
    registry = Registry.open(tmp_path / "d")
    try:
        conv = digits.heavy(channels=16, layers=1)
        registry.register(conv.name, conv.task, conv.onnx, validation=conv.validation, max_batch=16, threads=1)
        monkeypatch.setitem(sys.modules, "nncf", None)  # find_spec("nncf") says it is not there
        artifacts, skipped = generate_artifacts(registry, registry.architecture(conv.name), runtimes=("openvino",))
        assert {"ov-fp32", "ov-int8"} <= {a.format for a in artifacts} and "ov-int8-nncf" not in {
            a.format for a in artifacts
        }
        assert "NNCF is not installed" in next(s.reason for s in skipped if s.format == "ov-int8-nncf")
        # without calibration or validation data there is nothing to calibrate on: said, not attempted
        bare = digits.heavy(channels=8, layers=1)
        registry.register("bare-conv", bare.task, bare.onnx, max_batch=16, threads=1)
        monkeypatch.delitem(sys.modules, "nncf")
        _, skipped = generate_artifacts(registry, registry.architecture("bare-conv"), runtimes=("openvino",))
        assert "no calibration or validation data" in next(s.reason for s in skipped if s.format == "ov-int8-nncf")
    finally:
        registry.close()


def test_openvino_and_ort_variants_are_served_alike(heavy_dir, tmp_path):
    """Served through a worker: a model-less query is answered by a variant of either runtime, and an
    explicit OpenVINO variant answers what ONNX Runtime's answers (its compiled model cached in the
    data directory)."""
    data = copy_data_dir(heavy_dir, tmp_path / "d")
    registry = Registry.open(data)
    variants = {v.name: v for v in registry.variants("digits-conv")}
    registry.close()
    server = BackgroundServer(
        Settings(data_dir=data, port=0, grpc_port=0, workers=1, cores_per_worker=1, autoscale=False)
    ).start()
    try:
        _, y = digits.sample_inputs(16)

        def infer(model: str, **params) -> httpx.Response:
            return httpx.post(f"{server.url}/v2/models/{model}/infer", content=digits_body(16, **params), timeout=60)

        r = infer("digits-conv", latency_ms=1000)  # model-less: the policy picks, whatever the runtime
        assert r.status_code == 200, r.text
        chosen = r.json()["parameters"]["variant"]
        assert variants[chosen].status == "ready"

        answers = {}
        for name in ("digits-conv.fp32.cpu.t1.b16", "digits-conv.ov-fp32.cpu.t1.b16"):
            r = infer(name)
            assert r.status_code == 200, r.text
            assert r.json()["parameters"]["variant"] == name
            answers[name] = {o["name"]: np.asarray(o["data"]) for o in r.json()["outputs"]}
        ort_p, ov_p = answers.values()
        np.testing.assert_allclose(ov_p["probabilities"], ort_p["probabilities"], atol=1e-4)
        assert (ov_p["label"] == y).mean() >= 0.9
        assert any((data / "cache" / "openvino").iterdir())  # the compiled blob, for the next load
    finally:
        server.stop()
