"""EfficientNet-Lite zoo: one task signature, three architectures, the same request answered by all."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the [zoo] extra")

from infaas.client import Client  # noqa: E402
from infaas.frontend.server import BackgroundServer  # noqa: E402
from infaas.registry import Registry  # noqa: E402
from infaas.settings import Settings  # noqa: E402
from infaas.zoo import efficientnet  # noqa: E402

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


@pytest.fixture(scope="module")
def lite_models():
    return efficientnet.build()


@pytest.fixture(scope="module")
def lite_server(tmp_path_factory, lite_models):
    data = tmp_path_factory.mktemp("lite")
    registry = Registry.open(data)
    for m in lite_models:
        registry.register(m.name, m.task, m.onnx, accuracy=m.accuracy, max_batch=m.max_batch,
                          description=m.description)  # fmt: skip
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
        ref = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False) if side != resolution else x
        got = torch.matmul(torch.matmul(module.resize, x), module.resize.t()) if side != resolution else x
        assert torch.allclose(got, ref, atol=1e-3), name


def test_crop_box_follows_the_reference_preprocessing():
    assert efficientnet.crop_box(224) == (16, 224)
    assert efficientnet.crop_box(240) == (16, 225)
    assert efficientnet.crop_box(260) == (15, 227)
