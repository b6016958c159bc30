"""Plots of a simulation's results (matplotlib, PNG): violations, workers and cost over time, one line
per contender, and the oracle bound's cost beside theirs."""

from __future__ import annotations

import textwrap
from itertools import accumulate
from pathlib import Path

COLORS = {"infaas": "#2a7", "infaas-original": "#79c", "static-peak": "#999", "static-mean": "#c96", "oracle": "#000"}


def _smooth(xs: list[float], window: int) -> list[float]:
    """A trailing mean over ``window`` seconds (a second's counts are noisy at low rates)."""
    sums = [0.0, *accumulate(xs)]
    return [(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(window, i + 1) for i in range(len(xs))]


def plot(result: dict, out: str | Path, title: str = "") -> list[Path]:
    """Write ``violations.png``, ``workers.png`` and ``cost.png`` under ``out``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plots needs matplotlib: pip install matplotlib") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = result["contenders"]
    n = max(len(r["series"]["workers"]) for r in runs)
    window = max(1, n // 120)  # about 120 points across the run
    paths = []

    def figure(name: str, ylabel: str, lines: list[tuple[str, list[float]]]) -> None:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for label, ys in lines:
            ax.plot(range(len(ys)), ys, label=label, color=COLORS.get(label), lw=1.4)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel(ylabel)
        text = title or f"{result['trace']['requests']:,} requests; {result['fleet']}"
        ax.set_title("\n".join(textwrap.wrap(text.replace("$", r"\$"), 110)), fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    def share(r: dict) -> list[float]:
        v, q = _smooth(r["series"]["violations"], window), _smooth(r["series"]["requests"], window)
        return [100 * a / b if b else 0.0 for a, b in zip(v, q, strict=True)]

    figure("violations", f"violations (% of requests, {window}-s mean)", [(r["contender"], share(r)) for r in runs])
    figure("workers", "live workers", [(r["contender"], r["series"]["workers"]) for r in runs])
    cost = [(r["contender"], list(accumulate(r["series"]["cost_usd"]))) for r in runs]
    cost.append(("oracle", list(accumulate(result["oracle"]["per_second_usd"]))))
    figure("cost", "cumulative cost (USD)", cost)
    return paths
