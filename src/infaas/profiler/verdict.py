"""Verdicts on profiled variants, side by side: a variant whose quality loss may exceed the bound
is rejected, and so is one that another variant beats clearly on every count (p50 at batch 1,
time per row, cost, accuracy), each count judged beyond its timing noise."""

from __future__ import annotations

from infaas.registry import Profile, Variant
from infaas.settings import Settings


def _acc(p: Profile) -> str:
    return "not evaluated" if p.accuracy is None else f"{p.accuracy:.3f}"


def _better(o: float, v: float, margin: float, o_noise: float = 0.0, v_noise: float = 0.0) -> tuple[bool, bool]:
    """(no worse, clearly better) for one lower-is-better count. No worse: not worse beyond the two
    values' absolute noise. Clearly better: better by more than ``margin`` (a fraction) and the noise.
    (A count cannot be clearly better one way and no worse the other: no two variants dominate each
    other.)"""
    return o - o_noise <= v + v_noise, o + o_noise < (1 - margin) * (v - v_noise)


def _timing_counts(q: Profile, p: Profile, margin: float, floor_ms: float) -> list[tuple[bool, bool]]:
    """``q`` against ``p`` on p50@1, time per row at the best batch and cost, each with the noise floor
    of one timed call (``floor_ms``; per row, spread over the best batch)."""
    q_row, p_row = 1000 / q.throughput, 1000 / p.throughput
    q_noise, p_noise = floor_ms / q.best_batch, floor_ms / p.best_batch
    return [
        _better(q.latency_p50_ms[1], p.latency_p50_ms[1], margin, floor_ms, floor_ms),
        _better(q_row, p_row, margin, q_noise, p_noise),
        _better(q.cost_per_1k, p.cost_per_1k, margin, q.cost_per_1k * q_noise / q_row, p.cost_per_1k * p_noise / p_row),
    ]


def judge(variants: list[Variant], profiles: dict[str, Profile], settings: Settings) -> list[Variant]:
    """Reject variants whose loss may exceed the bound, and variants another beats clearly on every count."""
    bound, margin = settings.max_accuracy_drop, settings.dominance_margin
    out = []
    for v in variants:
        p = profiles.get(v.name)
        if p is None or v.status != "ready":
            out.append(v)
            continue
        if p.loss_high is not None and p.loss_high > bound + 1e-12:
            out.append(
                v.model_copy(
                    update={
                        "status": "rejected",
                        "reason": (
                            f"may lose up to {p.loss_high:.4f} {p.metric} against its parent (one-sided 95 % bound; estimate "
                            f"{p.loss:.4f} on {p.samples} inputs), over the bound of {bound}"
                        ),
                    }
                )
            )
            continue
        out.append(v)
    ready = [v for v in out if v.status == "ready"]
    judged = []
    for v in out:
        p = profiles.get(v.name)
        if v.status != "ready" or p is None:
            judged.append(v)
            continue
        for o in ready:
            q = profiles[o.name]
            if o is v or o.max_batch != v.max_batch or o.provider != v.provider:
                continue
            if o.threads > v.threads:  # it needs more cores than v: on workers with fewer, v still serves
                continue
            if q.accuracy_source == "estimated" and p.accuracy_source in ("measured", "declared", "reference"):
                continue  # an estimate is weaker evidence than what it would displace
            acc_o, acc_v = (
                (q.accuracy if q.accuracy is not None else -1),
                (p.accuracy if p.accuracy is not None else -1),
            )
            if p.accuracy is None and q.accuracy is None:
                continue  # nothing known about either's quality: timings alone do not decide
            counts = [*_timing_counts(q, p, margin, settings.timing_floor_ms), (acc_o >= acc_v, acc_o > acc_v)]
            if all(no_worse for no_worse, _ in counts) and any(better for _, better in counts):
                v = v.model_copy(
                    update={
                        "status": "rejected",
                        "reason": (
                            f"dominated by {o.name}: p50@1 {q.latency_p50_ms[1]:.3g} vs {p.latency_p50_ms[1]:.3g} ms, "
                            f"{q.throughput:.0f} vs {p.throughput:.0f} rows/s, accuracy {_acc(q)} vs {_acc(p)}, "
                            f"cost/1k ${q.cost_per_1k:.6f} vs ${p.cost_per_1k:.6f} (margin {margin:.0%}, "
                            f"noise floor {settings.timing_floor_ms} ms a call)"
                        ),
                    }
                )
                break
        judged.append(v)
    return judged
