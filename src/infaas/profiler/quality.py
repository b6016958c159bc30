"""Quality estimates with their evidence: a value in the task's metric, a 95 % interval, the number
of evaluation inputs it rests on, and a one-sided 95 % upper bound on the loss against the parent.

Every estimate is *paired*: variant and parent answer the same inputs, so the loss is measured row
by row and its uncertainty is that of the differences, far smaller than that of two separate
accuracies. Three estimators, one per kind of evidence:

- ``top1_measured`` (labels registered): accuracy with a Wilson interval; the loss is the mean of
  ``parent right - variant right`` over rows, bounded with the spread of the discordant rows.
- ``top1_estimated`` (no labels; the parent's accuracy is declared or measured at registration): the
  loss on a row is ``p(a) - p(b)``, where ``a`` is the parent's answer, ``b`` the variant's and ``p``
  the parent's own class probabilities — the expected number of correct answers lost if the parent
  is calibrated (an over-confident parent makes the estimate pessimistic). Every row counts, so
  ambiguous inputs weigh what they are worth instead of being dropped or counted whole.
- ``fidelity`` (any float outputs; no labels needed): per row, the cosine similarity of all outputs
  to the parent's (``cosine``) or ``1 - relative L2 error`` (``rel-l2``); the loss is ``1 - value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_TWO_SIDED = 1.959964  # 95 % interval
Z_ONE_SIDED = 1.644854  # 95 % upper bound


@dataclass(frozen=True)
class Quality:
    value: float
    low: float
    high: float
    samples: int
    loss: float
    loss_high: float
    source: str  # measured | estimated | reference
    evidence: str  # one line: what the numbers rest on
    agreement: float | None = None  # top-1: share of answers equal to the parent's

    def within(self, bound: float) -> bool:
        return self.loss_high <= bound + 1e-12


def wilson(k: int, n: int, z: float = Z_TWO_SIDED) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_bounds(x: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, low, high, one-sided upper) of per-row values, normal approximation; when every row is
    equal the spread is taken as that of one row differing by the largest value seen (never zero)."""
    n = len(x)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 1.0
    if sd == 0.0:
        sd = max(abs(mean), 1e-3) / math.sqrt(n)  # rows all agree: bound by one row in n disagreeing
    se = sd / math.sqrt(n)
    return mean, mean - Z_TWO_SIDED * se, mean + Z_TWO_SIDED * se, mean + Z_ONE_SIDED * se


def reference(value: float | None, samples: int, source: str = "reference") -> Quality:
    """The parent itself (or the same graph at other threads): no loss by definition."""
    v = 1.0 if value is None else value
    return Quality(v, v, v, samples, 0.0, 0.0, source, "the parent graph itself", 1.0)


def top1_measured(pred: np.ndarray, parent_pred: np.ndarray, labels: np.ndarray) -> Quality:
    n = len(labels)
    right, parent_right = pred == labels, parent_pred == labels
    k = int(right.sum())
    low, high = wilson(k, n)
    diff = parent_right.astype(np.float64) - right.astype(np.float64)
    lost, gained = int((diff > 0).sum()), int((diff < 0).sum())
    loss = float(diff.mean())
    # the paired difference's spread comes from the discordant rows; at least one is assumed
    loss_high = loss + Z_ONE_SIDED * math.sqrt(max(lost + gained - n * loss * loss, 1.0)) / n
    return Quality(
        k / n,
        low,
        high,
        n,
        loss,
        loss_high,
        "measured",
        f"{k} of {n} labelled inputs right; {lost} lost and {gained} gained against the parent",
        float((pred == parent_pred).mean()),
    )


def top1_estimated(
    pred: np.ndarray, parent_top: tuple[np.ndarray, np.ndarray] | None, parent_pred: np.ndarray, parent_accuracy: float
) -> Quality:
    """``parent_top``: the parent's top-k classes and probabilities per row (None: no scores, each
    changed answer then counts as a whole loss)."""
    n = len(pred)
    changed = pred != parent_pred
    if parent_top is None:
        x = changed.astype(np.float64)
    else:
        classes, probs = parent_top
        # p(b): the parent's probability of the variant's answer (0 when outside its top k)
        hit = classes == pred[:, None]
        p_b = np.where(hit.any(axis=1), (probs * hit).sum(axis=1), 0.0)
        x = np.where(changed, probs[:, 0] - p_b, 0.0)
    loss, lo, hi, upper = _mean_bounds(x)
    value = parent_accuracy - loss
    return Quality(
        value,
        max(0.0, parent_accuracy - hi),
        min(1.0, parent_accuracy - lo),
        n,
        loss,
        upper,
        "estimated",
        f"{int(changed.sum())} of {n} unlabelled inputs answered differently from the parent; "
        "expected loss under the parent's probabilities",
        float(1 - changed.mean()),
    )


def fidelity(outputs: list[np.ndarray], parent_outputs: list[np.ndarray], metric: str) -> Quality:
    """Per-row similarity of a variant's outputs to its parent's, every float output concatenated."""
    v = np.concatenate([o.reshape(len(o), -1).astype(np.float64) for o in outputs], axis=1)
    p = np.concatenate([o.reshape(len(o), -1).astype(np.float64) for o in parent_outputs], axis=1)
    n = len(p)
    if metric == "cosine":
        norms = np.linalg.norm(v, axis=1) * np.linalg.norm(p, axis=1)
        x = np.where(norms > 0, (v * p).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    elif metric == "rel-l2":
        x = 1.0 - np.linalg.norm(v - p, axis=1) / np.maximum(np.linalg.norm(p, axis=1), 1e-30)
    else:
        raise ValueError(f"not a fidelity metric: {metric}")
    x = np.clip(x, -1.0, 1.0)
    loss, lo, hi, upper = _mean_bounds(1.0 - x)
    return Quality(
        1.0 - loss,
        max(-1.0, 1.0 - hi),
        min(1.0, 1.0 - lo),
        n,
        loss,
        upper,
        "measured",
        f"{metric} to the parent's outputs on {n} inputs (worst row {x.min():.4f})",
    )
