"""PyTorch's variants beside ONNX Runtime's: from a registered ``torch.export`` program, generated,
profiled, judged and served by the same code (digits-conv, registered with its program); and the
clean skips: no program, a program that does not load, PyTorch missing, no CUDA device."""

from __future__ import annotations

import asyncio
import sys

import httpx
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the [zoo] extra")

from infaas.app import BackgroundServer  # noqa: E402
from infaas.errors import InvalidInput, RuntimeContractError  # noqa: E402
from infaas.hardware import local_kind  # noqa: E402
from infaas.profiler import profile_architecture  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.variants import generate_artifacts, plan_variants  # noqa: E402
from infaas.worker.runtime import make_runtime  # noqa: E402
from infaas.worker.torch_runtime import TorchRuntime  # noqa: E402
from infaas.zoo import digits  # noqa: E402
from tests.conftest import copy_data_dir, digits_body  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def conv():
    return digits.heavy(channels=32, program=True)  # a narrow digits-conv: fast to profile


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory, conv):
    """digits-conv and its program registered, ONNX Runtime's and PyTorch's variants profiled (quick)."""
    data = tmp_path_factory.mktemp("torch")
    registry = Registry.open(data)
    conv.register_in(registry, threads=1)
    settings = Settings(data_dir=data, runtimes=["onnxruntime", "pytorch"])
    report = asyncio.run(profile_architecture(registry, conv.name, settings, quick=True))
    registry.close()
    return data, report


def test_pytorch_variants_stand_beside_ort_ones_each_with_a_verdict(torch_dir):
    data, report = torch_dir
    registry = Registry.open(data)
    try:
        variants = {v.name: v for v in registry.variants("digits-conv")}
        formats = {v.format for v in variants.values()}
        assert {"onnx-fp32", "pt-fp32", "pt-aot-fp32"} <= formats, report.skipped  # AOT needs g++ (.ci/run)
        assert ("pt-bf16" in formats) == local_kind().bf16
        if not local_kind().bf16:
            assert "emulate" in {s.format: s.reason for s in report.skipped}["pt-bf16"]
        pt = variants["digits-conv.pt-fp32.cpu.t1.b16"]  # the name carries the runtime
        fp32 = variants["digits-conv.fp32.cpu.t1.b16"]
        # the same model, judged on its own answers on the labelled validation split: the same accuracy;
        # or, where eager PyTorch runs under half ONNX Runtime's speed, timed and not evaluated (said so)
        if pt.accuracy_source == "measured":
            assert abs(pt.accuracy - fp32.accuracy) <= 0.005
        else:
            assert pt.status == "rejected" and pt.reason.startswith("not evaluated")
        assert pt.status in ("ready", "rejected") and (pt.reason or pt.status == "ready")
        assert pt.params["outputs"] == ["label", "probabilities"] and isinstance(pt.params["channels_last"], bool)
        assert pt.params["channels_last_speedup"] > 0  # measured, not assumed
        aot = variants["digits-conv.pt-aot-fp32.cpu.t1.b16"]  # compiled ahead of time, for this kind
        assert aot.params["built_for"] == local_kind().id and aot.params["compile_s"] > 0
        assert aot.artifact_hash != pt.artifact_hash and aot.status in ("ready", "rejected")
        profile = registry.profile(pt.name)
        assert (
            profile is not None
            and profile.latency_p50_ms[1] > 0
            and profile.load_time_ms > 0
            and profile.peak_memory_mb > 0
        )
    finally:
        registry.close()


def test_a_pytorch_variant_is_served_and_answers_like_onnx_runtime(torch_dir, tmp_path):
    data = copy_data_dir(torch_dir[0], tmp_path / "d")
    server = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, cores_per_worker=1, autoscale=False, profile_on_register=False)
    ).start()
    try:
        _, y = digits.sample_inputs(16)
        answers = {}
        names = ("digits-conv.fp32.cpu.t1.b16", "digits-conv.pt-fp32.cpu.t1.b16", "digits-conv.pt-aot-fp32.cpu.t1.b16")
        for name in names:
            r = httpx.post(f"{server.url}/v2/models/{name}/infer", content=digits_body(16), timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["parameters"]["variant"] == name
            answers[name] = {o["name"]: np.asarray(o["data"]) for o in r.json()["outputs"]}
        ort_out, *pt_outs = answers.values()
        for pt_out in pt_outs:  # eager and compiled: the same answers as ONNX Runtime's
            np.testing.assert_allclose(pt_out["probabilities"], ort_out["probabilities"], atol=1e-4)
            assert (pt_out["label"] == y).mean() >= 0.9
        listed = httpx.get(f"{server.url}/api/v1/variants", timeout=30).json()
        runtimes = {v["name"]: v["runtime"] for v in listed}
        assert runtimes["digits-conv.pt-fp32.cpu.t1.b16"] == "pytorch"
        r = httpx.post(f"{server.url}/v2/models/digits-conv/infer", content=digits_body(4, latency_ms=1000), timeout=60)
        assert r.status_code == 200, r.text  # model-less: the policy picks, whatever the runtime
    finally:
        server.stop()


def test_no_program_a_broken_one_or_no_torch_skips_the_formats_with_the_reason(conv, tmp_path, monkeypatch):
    registry = Registry.open(tmp_path / "d")
    try:
        plain = digits.heavy(channels=8, layers=1)
        plain.register_in(registry, threads=1)
        _, skipped = generate_artifacts(
            registry, registry.architecture("digits-conv"), runtimes=("onnxruntime", "pytorch")
        )
        assert all("no PyTorch program registered" in s.reason for s in skipped if s.format.startswith("pt-"))
        assert {s.format for s in skipped} >= {"pt-fp32", "pt-bf16"}

        with pytest.raises(InvalidInput, match="not a torch.export archive"):
            registry.register("not-a-program", plain.task, plain.onnx, program=b"\x00 not a zip")
        registry.register("broken", plain.task, plain.onnx, program=b"PK\x03\x04 but no archive")
        artifacts, skipped = generate_artifacts(
            registry, registry.architecture("broken"), runtimes=("onnxruntime", "pytorch")
        )
        assert not [a for a in artifacts if a.format.startswith("pt-")]
        assert all("does not load or run" in s.reason for s in skipped if s.format.startswith("pt-"))

        registry.register("with-program", conv.task, conv.onnx, program=conv.program)
        arch = registry.architecture("with-program")
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
        artifacts, skipped = generate_artifacts(registry, arch, runtimes=("onnxruntime", "pytorch"))
        assert not [a for a in artifacts if a.format.startswith("pt-")]
        assert all("PyTorch is not installed" in s.reason for s in skipped if s.format.startswith("pt-"))
        with pytest.raises(RuntimeContractError, match="PyTorch is not installed"):
            make_runtime(registry.models.path(arch.program_hash), "pt-fp32", options={"outputs": ["label"]}).load()
    finally:
        registry.close()


def test_the_gpu_path_skips_cleanly_without_a_cuda_device(conv, tmp_path):
    import torch

    registry = Registry.open(tmp_path / "d")
    try:
        conv.register_in(registry, threads=1)
        arch = registry.architecture("digits-conv")
        artifacts, _ = generate_artifacts(registry, arch, runtimes=("onnxruntime", "pytorch"))
        cuda = torch.cuda.is_available()
        assert {a.params["cuda_device"] for a in artifacts if a.format == "pt-fp32"} == {cuda}  # the build says
        planned = plan_variants(arch, artifacts, 1, 16)
        assert any(v.provider == "cuda" and v.format == "pt-fp32" for v in planned) == cuda
        if not cuda:
            with pytest.raises(RuntimeContractError, match="no CUDA device"):
                TorchRuntime(registry.models.path(arch.program_hash), device="cuda").load()
    finally:
        registry.close()


def test_a_compiled_package_is_refused_on_another_hardware_kind(torch_dir):
    """AOTInductor's shared library may use instructions another CPU lacks: loading it on another
    kind is a clear error, not a crash."""
    registry = Registry.open(torch_dir[0])
    try:
        aot = registry.variant("digits-conv.pt-aot-fp32.cpu.t1.b16")
        path = registry.models.path(aot.artifact_hash)
        other = {**aot.params, "built_for": "x86_64.another-cpu.avx2"}
        with pytest.raises(RuntimeContractError, match="compiled by AOTInductor for hardware kind x86_64.another-cpu"):
            make_runtime(path, "pt-aot-fp32", options=other).load()
        runtime = make_runtime(path, "pt-aot-fp32", options=aot.params)
        runtime.load()  # on its own kind it loads, and runs zeros of the recorded input shapes
        out = runtime.infer(runtime.sample_inputs(3))
        assert out["probabilities"].shape == (3, 10) and out["label"].shape == (3,)
    finally:
        registry.close()
