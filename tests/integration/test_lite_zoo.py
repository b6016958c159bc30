"""EfficientNet-Lite zoo: one task signature, three architectures, the same request answered by all."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the [zoo] extra")

from infaas.app import BackgroundServer  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.zoo import efficientnet  # noqa: E402
from tests.conftest import assert_selection_and_admission_agree  # noqa: E402

pytestmark = [
    pytest.mark.zoo,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]  # Lite profiling: minutes on an AVX2-only CPU


@pytest.fixture(scope="module")
def lite_models():
    return efficientnet.build()


@pytest.fixture(scope="module")
def lite_server(tmp_path_factory, lite_models):
    data = tmp_path_factory.mktemp("lite")
    registry = Registry.open(data)
    for m in lite_models:
        registry.register(m.name, m.task, m.onnx, accuracy=m.accuracy, max_batch=m.max_batch, description=m.description)
    registry.close()
    server = BackgroundServer(Settings(data_dir=data, port=0, workers=1)).start()
    yield server
    server.stop()


def test_task_signature_is_shared(lite_server):
    with Client(lite_server.url) as c:
        for name in ("imagenet-classification", *efficientnet.ARCHITECTURES):
            meta = c.model_metadata(name)
            assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 256, 256, 3]}]
            assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]


def test_all_three_answer_the_same_request_like_pytorch(lite_server):
    import torch

    images = efficientnet.sample_images(3)
    with Client(lite_server.url) as c:
        for name, (resolution, top1) in efficientnet.ARCHITECTURES.items():
            r = c.infer(name, images)
            logits = r.outputs["logits"]
            assert logits.shape == (3, 1000)
            assert r.parameters["accuracy"] == top1 and r.parameters["accuracy_source"] == "declared"
            with torch.no_grad():
                ref = efficientnet._wrapped(name)(torch.from_numpy(images)).numpy()
            np.testing.assert_allclose(logits, ref, atol=2e-3, rtol=1e-3)
            assert (logits.argmax(1) == ref.argmax(1)).all(), f"{name} at {resolution}px"
        task = c.infer("imagenet-classification", images)
        assert task.parameters["architecture"] == "efficientnet-lite2"  # most accurate, declared


def test_folded_resize_is_pytorch_bicubic():
    import torch
    import torch.nn.functional as F

    images = torch.from_numpy(efficientnet.sample_images(2, seed=3))
    for name, (resolution, _) in efficientnet.ARCHITECTURES.items():
        offset, side = efficientnet.crop_box(resolution)
        module = efficientnet._wrapped(name)
        x = images.permute(0, 3, 1, 2).float()[:, :, offset : offset + side, offset : offset + side]
        ref = (
            F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False)
            if side != resolution
            else x
        )
        got = torch.matmul(torch.matmul(module.resize, x), module.resize.t()) if side != resolution else x
        assert torch.allclose(got, ref, atol=1e-3), name


def test_crop_box_follows_the_reference_preprocessing():
    assert efficientnet.crop_box(224) == (16, 224)
    assert efficientnet.crop_box(240) == (16, 225)
    assert efficientnet.crop_box(260) == (15, 227)


@pytest.fixture(scope="module")
def lite_reports(tmp_path_factory, lite_models):
    """Lite0 and Lite2, generated and profiled (quick) on this machine; the data directory and reports."""
    import asyncio

    from infaas.profiler import profile_architecture

    data = tmp_path_factory.mktemp("lite-profiled")
    registry = Registry.open(data)
    reports = {}
    for m in lite_models:
        if m.name in ("efficientnet-lite0", "efficientnet-lite2"):
            registry.register(m.name, m.task, m.onnx, accuracy=m.accuracy, calibration=m.calibration, max_batch=16)
            # ONNX Runtime's forms only (OpenVINO's are covered by test_runtimes): on an AVX2-only
            # EPYC, profiling Lite2 alone took 814 s with both runtimes
            settings = Settings(data_dir=data, runtimes=["onnxruntime"])
            reports[m.name] = asyncio.run(profile_architecture(registry, m.name, settings, quick=True))
    registry.close()
    return data, reports


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_an_int8_variant_beats_fp32_within_the_bound_or_the_search_says_why(lite_reports, name):
    """On any CPU: an INT8 (or mixed) variant faster than fp32 whose one-sided 95 % loss bound is within
    max_accuracy_drop on >= 1,000 evaluation inputs; or, where none can be, every recipe tried with why."""
    _, reports = lite_reports
    report = reports[name]
    bound = Settings().max_accuracy_drop
    by = {(v.format, v.threads, v.max_batch): v for v in report.variants}
    prof = report.profiles
    for threads in (1, 2):
        for mb in (1, 4, 8, 16):
            assert ("onnx-fp32", threads, mb) in by and ("onnx-int8-static", threads, mb) in by
    fp32 = by[("onnx-fp32", 2, 16)]
    assert (fp32.accuracy, fp32.accuracy_source) == (efficientnet.ARCHITECTURES[name][1], "declared")
    assert fp32.status == "ready" and prof[fp32.name].hardware == report.kind
    winners = [  # ORT's QDQ graph, run by ONNX Runtime or by OpenVINO (ov-int8)
        v
        for v in report.variants
        if v.format in ("onnx-int8-static", "ov-int8")
        and v.status == "ready"
        and prof[v.name].throughput > prof[by[("onnx-fp32", v.threads, v.max_batch)].name].throughput
    ]
    if winners:
        for v in winners:
            p = prof[v.name]
            assert v.accuracy_source == "estimated" and p.samples >= 1000 and p.loss_high <= bound
            assert p.accuracy_low <= v.accuracy <= p.accuracy_high <= fp32.accuracy + 1e-9
            assert v.params["recipe_text"]
            if v.format == "onnx-int8-static":
                assert p.peak_memory_mb < prof[by[("onnx-fp32", v.threads, v.max_batch)].name].peak_memory_mb
                assert v.params["search"][-1]["verdict"].startswith(("meets", "kept"))
    else:  # none could be kept here: the search log says, recipe by recipe, why (or, where the default
        # recipe is already slower than fp32, as on an AVX2-only CPU, why no search could help)
        log = report.searches["onnx-int8-static"]
        assert all(t["verdict"] for t in log)
        skipped = any(t["verdict"].startswith("not searched: the default recipe is slower than fp32") for t in log)
        assert len([t for t in log if "params" in t]) > 1 or skipped, log
    for v in report.variants:
        if v.format == "onnx-int8-dynamic":  # kept with honest numbers, or rejected with the measured reason
            assert v.status == "ready" or v.reason.startswith(("dominated by", "may lose", "not evaluated"))
        if v.status != "failed":
            assert prof[v.name].load_time_ms > 0 and prof[v.name].cost_per_1k > 0


@pytest.fixture(scope="module")
def profiled_lite_server(lite_reports):
    """Lite0 and Lite2, profiled, served by one worker."""
    data, _ = lite_reports
    server = BackgroundServer(Settings(data_dir=data, port=0, workers=1, profile_on_register=False)).start()
    yield server
    server.stop()


def test_objectives_choose_among_the_lite_family(profiled_lite_server):
    images = efficientnet.sample_images(1, seed=5)
    with Client(profiled_lite_server.url) as c:
        accurate = c.infer("imagenet-classification", images, min_accuracy=0.77)
        assert accurate.parameters["architecture"] == "efficientnet-lite2"
        assert accurate.parameters["accuracy"] >= 0.77 and accurate.outputs["logits"].shape == (1, 1000)

        # a lower floor with a latency objective: the cheap, fast family members (INT8, or Lite0) win.
        # The bound leaves room for a busy 2-core machine (background loads calibrate for seconds).
        fast = c.infer("imagenet-classification", images, min_accuracy=0.75, latency_ms=500)
        p = fast.parameters
        assert p["accuracy"] >= 0.75
        assert "int8" in p["variant"] or p["architecture"] == "efficientnet-lite0", p
        assert "why" not in p  # the reason says it (the accurate choice may already be the cheapest one)
        assert "cheapest variant meeting latency_ms" in p["reason"]
        with pytest.raises(Exception, match="min_accuracy 0.8 unreachable .* best is 0.776"):
            c.infer("imagenet-classification", images, min_accuracy=0.8)


def test_selection_and_admission_agree_for_every_lite_variant(profiled_lite_server):
    plane = profiled_lite_server.services
    names = [n for n, v in plane.catalog.variants.items() if v.status == "ready" and v.threads == 1]
    assert len(names) >= 4, names
    for name in names:
        assert_selection_and_admission_agree(profiled_lite_server, name)


def test_one_core_workers_are_never_given_a_two_thread_variant(lite_reports):
    """On 1-core workers a 2-thread variant runs on one thread, slower than its profile: even when it
    is the only one loaded (by hand), an objective query does not pick it but serves a 1-thread one."""
    data, reports = lite_reports
    t2 = next(v for v in reports["efficientnet-lite0"].variants if v.status == "ready" and v.threads == 2)
    server = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, cores_per_worker=1, autoscale=False, profile_on_register=False)
    ).start()
    try:
        images = efficientnet.sample_images(1, seed=5)
        with Client(server.url) as c:
            for v in c.variants("efficientnet-lite0"):
                if v["loaded_on"]:
                    c.unload_model(v["name"])
            assert c.load_model(t2.name) == ["w0"]
            r = c.infer("efficientnet-lite0", images, min_accuracy=0.7)
            assert ".t1." in r.parameters["variant"], r.parameters
    finally:
        server.stop()
