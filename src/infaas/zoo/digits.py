"""The digits zoo: four scikit-learn classifiers trained on scikit-learn's bundled digits data.

Trained and exported to ONNX (skl2onnx) on the spot, in a few seconds, with a held-out split
for measured accuracy. Task ``digits-classification``: input ``input`` FP32 [-1, 64] (8x8
grey images, pixel values 0..16), outputs ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, 10].
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TASK = "digits-classification"
INPUT = "input"


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    # the artifacts stay out of the repr (a failing test's report formats its fixtures' values)
    onnx: bytes = field(repr=False)
    validation: bytes | None = field(default=None, repr=False)
    calibration: bytes | None = field(default=None, repr=False)
    accuracy: float | None = None
    description: str = ""
    max_batch: int = 16
    metric: str | None = None  # the task's quality metric (None: from the outputs)
    program: bytes | None = field(default=None, repr=False)  # the same model as a torch.export .pt2

    def register_in(self, registry, **overrides):
        """Register this model in ``registry`` (a :class:`~infaas.registry.Registry`) with its
        accuracy, validation and calibration data; returns (architecture, baseline variant)."""
        fields = {
            "accuracy": self.accuracy,
            "validation": self.validation,
            "calibration": self.calibration,
            "max_batch": self.max_batch,
            "description": self.description,
            "program": self.program,
            **({"metric": self.metric} if self.metric else {}),
        }
        return registry.register(self.name, self.task, self.onnx, **{**fields, **overrides})


def _estimators(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {
        "digits-logreg": (LogisticRegression(max_iter=2000, C=0.05), "logistic regression"),
        "digits-mlp": (
            MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=seed),
            "multi-layer perceptron, one hidden layer of 128",
        ),
        "digits-tree": (DecisionTreeClassifier(max_depth=3, random_state=seed), "decision tree, depth 3"),
        "digits-nb": (GaussianNB(), "Gaussian naive Bayes"),
    }


def split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=seed, stratify=y)


def validation_npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=x, labels=y)
    return buf.getvalue()


def build(seed: int = 0) -> list[ZooModel]:
    """Train the four digits models; returns ONNX bytes and the held-out validation set."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    x_train, x_val, y_train, y_val = split(seed)
    val = validation_npz(x_val, y_val)
    models = []
    for name, (est, desc) in _estimators(seed).items():
        est.fit(x_train, y_train)
        onx = to_onnx(
            est,
            initial_types=[(INPUT, FloatTensorType([None, 64]))],
            options={id(est): {"zipmap": False}},
            target_opset=17,
        )
        # skl2onnx names the outputs 'label' and 'probabilities'
        models.append(ZooModel(name, TASK, onx.SerializeToString(), validation=val, description=desc))
    return models


def _random_features(channels: int, layers: int, seed: int) -> tuple[list, list]:
    """ONNX nodes and initializers: the 8x8 image through ``layers`` random 3x3 convolutions of
    ``channels`` channels (ReLU), 2x2 average pooling, flattened to ``features``."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    convs, width = [], 1
    for _ in range(layers):
        w = rng.normal(0, np.sqrt(2 / (9 * width)), (channels, width, 3, 3)).astype(np.float32)
        convs.append((w, rng.normal(0, 0.05, channels).astype(np.float32)))
        width = channels
    inits = [
        numpy_helper.from_array(np.array(1 / 16, np.float32), "scale"),
        numpy_helper.from_array(np.array([-1, 1, 8, 8], np.int64), "image"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]
    nodes = [helper.make_node("Mul", [INPUT, "scale"], ["x"]), helper.make_node("Reshape", ["x", "image"], ["h0"])]
    for i, (w, b) in enumerate(convs):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Conv", [f"h{i}", f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"h{i + 1}"]),
        ]
    nodes += [
        helper.make_node("AveragePool", [f"h{layers}"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pooled", "flat"], ["features"]),
    ]
    return nodes, inits


def heavy(channels: int = 256, layers: int = 5, seed: int = 0, program: bool = False) -> ZooModel:
    """``digits-conv``: a deliberately heavy model for the same task, to load a small machine.

    ``layers`` random 3x3 convolutions of ``channels`` channels over the 8x8 image (fixed random
    features, ReLU), 2x2 average pooling, and a ridge-regression read-out fitted in closed form:
    about 2 x 9 x 64 x channels^2 x layers FLOPs per row (~380 M at the defaults), with small
    weights, so it loads and quantizes fast. Accuracy is measured on the held-out split; the
    training inputs calibrate its INT8 variants. ``program``: with the same model as a PyTorch
    program (:mod:`infaas.zoo.programs`; needs torch), the source of its ``pt-*`` variants.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x_train, x_val, y_train, y_val = split(seed)
    nodes, inits = _random_features(channels, layers, seed)

    def graph(outputs, extra_nodes, extra_inits, name):
        return helper.make_model(
            helper.make_graph(
                nodes + extra_nodes,
                name,
                [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, 64])],
                outputs,
                inits + extra_inits,
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        )

    import onnxruntime as ort

    features = graph([helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, None])], [], [], "f")
    session = ort.InferenceSession(features.SerializeToString(), providers=["CPUExecutionProvider"])
    h = session.run(None, {INPUT: x_train})[0]
    targets = np.eye(10, dtype=np.float32)[y_train] * 8 - 4  # logits for a confident softmax
    ridge = h.T @ h + 10.0 * np.eye(h.shape[1], dtype=np.float32)
    w_out = np.linalg.solve(ridge, h.T @ targets).astype(np.float32)
    head = [
        helper.make_node("MatMul", ["features", "w_out"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    model = graph(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10]),
        ],
        head,
        [numpy_helper.from_array(w_out, "w_out")],
        "digits_conv",
    )
    onnx.checker.check_model(model)
    from infaas.zoo.programs import digits_conv_program

    arrays = {i.name: numpy_helper.to_array(i) for i in inits}
    convs = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(layers)]
    calib = io.BytesIO()
    np.savez(calib, inputs=x_train[:256])
    return ZooModel(
        "digits-conv",
        TASK,
        model.SerializeToString(),
        validation=validation_npz(x_val, y_val),
        calibration=calib.getvalue(),
        description=f"{layers} random 3x3 convolutions of {channels} channels + ridge read-out (heavy on purpose)",
        program=digits_conv_program(convs, w_out) if program else None,
    )


def sample_inputs(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A few held-out digits and their labels (for demos and tests)."""
    _, x_val, _, y_val = split(seed)
    return x_val[:n], y_val[:n]


def save(models: list[ZooModel], directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in models:
        p = directory / f"{m.name}.onnx"
        p.write_bytes(m.onnx)
        paths.append(p)
    if models and models[0].validation:
        (directory / "validation.npz").write_bytes(models[0].validation)
    return paths


def prepare_heavy(data_dir: Path | str) -> None:
    """Register ``digits-conv`` (accuracy measured, INT8 calibration data) in a data directory and
    generate and profile its variants (quick): the fixture of overload and autoscaling runs."""
    register_and_profile(data_dir, [heavy()])


def register_and_profile(data_dir: Path | str, models: list[ZooModel]) -> None:
    """Register zoo models in a data directory (no server needed) and generate and profile each one's
    variants (quick), one thread per variant."""
    import asyncio

    from infaas.profiler import profile_architecture
    from infaas.registry import Registry
    from infaas.settings import Settings

    registry = Registry.open(data_dir)
    try:
        for model in models:
            model.register_in(registry, threads=1)
            asyncio.run(profile_architecture(registry, model.name, Settings(data_dir=Path(data_dir)), quick=True))
    finally:
        registry.close()
