"""The digits zoo: four scikit-learn classifiers trained on scikit-learn's bundled digits data.

Trained and exported to ONNX (skl2onnx) on the spot, in a few seconds, with a held-out split
for measured accuracy. Task ``digits-classification``: input ``input`` FP32 [-1, 64] (8x8
grey images, pixel values 0..16), outputs ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, 10].
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASK = "digits-classification"
INPUT = "input"


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    onnx: bytes
    validation: bytes | None = None
    calibration: bytes | None = None
    accuracy: float | None = None
    description: str = ""
    max_batch: int = 16


def _estimators(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {
        "digits-logreg": (LogisticRegression(max_iter=2000, C=0.05), "logistic regression"),
        "digits-mlp": (MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=seed),
                       "multi-layer perceptron, one hidden layer of 128"),
        "digits-tree": (DecisionTreeClassifier(max_depth=3, random_state=seed),
                        "decision tree, depth 3"),
        "digits-nb": (GaussianNB(), "Gaussian naive Bayes"),
    }  # fmt: skip


def split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=0.3,
                            random_state=seed, stratify=y)  # fmt: skip


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
        onx = to_onnx(est, initial_types=[(INPUT, FloatTensorType([None, 64]))],
                      options={id(est): {"zipmap": False}}, target_opset=17)  # fmt: skip
        # skl2onnx names the outputs 'label' and 'probabilities'
        models.append(ZooModel(name, TASK, onx.SerializeToString(), validation=val, description=desc))
    return models


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
