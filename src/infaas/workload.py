"""Workloads: applications with objectives and request-rate patterns, and request traces.

An *app* is one user of the server: a task, an objective (``latency_ms``, ``min_accuracy``,
``max_cost``) and a rate pattern. A *trace* is one row per request, ``t_s,app`` (seconds from the
start), sorted by time — the format ``bench/workload`` replays and the simulator reads. Traces are
generated here from the patterns with a seeded generator, or brought by the user.

Patterns (``pattern.kind``):

- ``poisson``: steady Poisson arrivals at ``rate`` requests/s;
- ``ramp``: Poisson whose rate goes linearly from ``start`` to ``end`` over the trace;
- ``bursts``: a renewal process with Gamma inter-arrival times of mean ``1/rate`` and coefficient
  of variation ``cv`` (3-4 replays production bursts, as AlpaServe does);
- ``diurnal``: Poisson whose rate follows ``mean x (1 + amplitude x sin(2 pi t / period_s))``, a
  day compressed into ``period_s``.

Apps file (JSON): ``{"apps": [{"name", "task", "objective": {...}, "pattern": {"kind", ...}}]}``.

Per-minute counts (``minute,app,count``, as production logs often keep them) become a trace with
:func:`read_minute_counts`: each minute's ``count`` arrivals are spread over its 60 s by a Gamma
renewal process of a given coefficient of variation (1: Poisson-like; 3-4: bursty), normalized so
that exactly ``count`` fall inside the minute.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PATTERNS = ("poisson", "ramp", "bursts", "diurnal")


@dataclass(frozen=True)
class App:
    name: str
    task: str
    objective: dict = field(default_factory=dict)  # latency_ms, min_accuracy, max_cost
    pattern: dict = field(default_factory=dict)

    @property
    def latency_ms(self) -> float | None:
        return self.objective.get("latency_ms")

    @property
    def min_accuracy(self) -> float | None:
        return self.objective.get("min_accuracy")

    def mean_rate(self, duration_s: float) -> float:
        p = self.pattern
        kind = p["kind"]
        if kind in ("poisson", "bursts"):
            return float(p["rate"])
        if kind == "ramp":
            return (p["start"] + p["end"]) / 2
        if kind == "diurnal":
            cycles = duration_s / p["period_s"]
            whole = math.floor(cycles)  # a sine averages to zero over whole periods only
            rest = (1 - math.cos(2 * math.pi * (cycles - whole))) / (2 * math.pi * cycles) if cycles else 0.0
            return p["mean"] * (1 + p.get("amplitude", 0.5) * rest)
        raise ValueError(f"unknown pattern kind {kind!r} (one of {', '.join(PATTERNS)})")

    def peak_rate(self, duration_s: float, window_s: float = 1.0, seed: int = 0) -> float:
        """The highest number of requests in any ``window_s`` of a trace of this app, per second."""
        times = arrivals(self, duration_s, np.random.default_rng(seed))
        if not len(times):
            return 0.0
        counts = np.bincount((times // window_s).astype(int))
        return float(counts.max() / window_s)


def load_apps(path: str | Path) -> list[App]:
    data = json.loads(Path(path).read_text())
    apps = []
    for i, a in enumerate(data.get("apps") or []):
        if not isinstance(a, dict) or not {"name", "task"} <= set(a):
            raise ValueError(f"{path}: app #{i + 1} needs a name and a task")
        apps.append(App(a["name"], a["task"], dict(a.get("objective") or {}), dict(a.get("pattern") or {})))
    for a in apps:  # a pattern generates a trace; apps replayed from a trace need none
        if a.pattern and a.pattern.get("kind") not in PATTERNS:
            raise ValueError(
                f"app {a.name}: pattern kind {a.pattern.get('kind')!r} is not one of {', '.join(PATTERNS)}"
            )
    if len({a.name for a in apps}) != len(apps):
        raise ValueError("app names must be unique")
    return apps


def _thinned(rate_at, peak: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson arrivals by thinning a homogeneous process of rate ``peak``."""
    if peak <= 0:
        return np.empty(0)
    n = rng.poisson(peak * duration_s)
    t = np.sort(rng.uniform(0, duration_s, n))
    keep = rng.uniform(0, peak, n) < np.maximum(0.0, rate_at(t))
    return t[keep]


def arrivals(app: App, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of one app's requests over ``duration_s``."""
    p = app.pattern
    kind = p["kind"]
    if kind == "poisson":
        return _thinned(lambda t: np.full_like(t, p["rate"]), p["rate"], duration_s, rng)
    if kind == "ramp":
        start, end = p["start"], p["end"]
        return _thinned(lambda t: start + (end - start) * t / duration_s, max(start, end), duration_s, rng)
    if kind == "diurnal":
        mean, amp, period = p["mean"], p.get("amplitude", 0.5), p["period_s"]
        return _thinned(
            lambda t: mean * (1 + amp * np.sin(2 * np.pi * t / period)), mean * (1 + abs(amp)), duration_s, rng
        )
    if kind == "bursts":
        rate, cv = p["rate"], p.get("cv", 3.5)
        shape = 1 / cv**2  # Gamma with mean 1/rate and coefficient of variation cv
        n = int(rate * duration_s * 3) + 16
        t = np.cumsum(rng.gamma(shape, 1 / (rate * shape), n))
        while t[-1] < duration_s:  # rare: draw more
            t = np.concatenate([t, t[-1] + np.cumsum(rng.gamma(shape, 1 / (rate * shape), n))])
        return t[t < duration_s]
    raise ValueError(f"unknown pattern kind {kind!r} (one of {', '.join(PATTERNS)})")


def generate(apps: list[App], duration_s: float, seed: int = 0) -> list[tuple[float, str]]:
    """A trace of every app over ``duration_s``, sorted by time; the same for the same seed."""
    rows: list[tuple[float, str]] = []
    for i, app in enumerate(apps):
        rng = np.random.default_rng([seed, i])
        rows += [(float(t), app.name) for t in arrivals(app, duration_s, rng)]
    rows.sort()
    return rows


def write_trace(path: str | Path, rows: list[tuple[float, str]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "app"])
        for t, app in rows:
            w.writerow([f"{t:.6f}", app])


def read_trace(path: str | Path, apps: list[App] | None = None) -> list[tuple[float, str]]:
    """Read a ``t_s,app`` trace; with ``apps``, every row must name one of them."""
    known = None if apps is None else {a.name for a in apps}
    rows = []
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"t_s", "app"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a trace needs the columns t_s,app")
        for line, row in enumerate(reader, start=2):
            try:
                t = float(row["t_s"])
            except ValueError:
                raise ValueError(f"{path}:{line}: t_s {row['t_s']!r} is not a number") from None
            if t < 0 or not math.isfinite(t):
                raise ValueError(f"{path}:{line}: t_s must be a finite number >= 0")
            if known is not None and row["app"] not in known:
                raise ValueError(f"{path}:{line}: app {row['app']!r} is not in the apps file")
            rows.append((t, row["app"]))
    rows.sort()
    return rows


def minute_arrivals(count: int, cv: float, rng: np.random.Generator, minute_s: float = 60.0) -> np.ndarray:
    """``count`` arrival offsets inside one minute: ``count + 1`` Gamma gaps of coefficient of
    variation ``cv``, scaled so that they span the minute (the last gap ends it)."""
    if count <= 0:
        return np.empty(0)
    shape = 1 / cv**2
    ends = np.cumsum(rng.gamma(shape, 1.0, count + 1))
    return ends[:-1] / ends[-1] * minute_s


def read_minute_counts(
    path: str | Path, apps: list[App] | None = None, cv: float = 1.0, seed: int = 0
) -> list[tuple[float, str]]:
    """A ``minute,app,count`` file as a ``(t_s, app)`` trace (see the module's note); rows must come in
    minute order; the same file and seed give the same trace."""
    if not (cv > 0 and math.isfinite(cv)):
        raise ValueError(f"cv must be a finite number > 0, not {cv}")
    known = None if apps is None else {a.name for a in apps}
    rows: list[tuple[float, str]] = []
    last = 0
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"minute", "app", "count"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: per-minute counts need the columns minute,app,count")
        for line, row in enumerate(reader, start=2):
            try:
                minute, count = int(row["minute"]), int(row["count"])
            except ValueError:
                raise ValueError(f"{path}:{line}: minute and count must be whole numbers") from None
            if minute < 0 or count < 0:
                raise ValueError(f"{path}:{line}: minute and count must be >= 0")
            if minute < last:
                raise ValueError(
                    f"{path}:{line}: minute {minute} comes after minute {last}: rows must be in minute order"
                )
            if known is not None and row["app"] not in known:
                raise ValueError(f"{path}:{line}: app {row['app']!r} is not in the apps file")
            last = minute
            rng = np.random.default_rng([seed, line])
            rows += [(minute * 60.0 + float(t), row["app"]) for t in minute_arrivals(count, cv, rng)]
    rows.sort()
    return rows


# ---- prediction error ---------------------------------------------------------------------------
SHORT_MS = 2.0  # under this, relative error says little (digits requests total well under 1 ms)


def error_stats(samples: list[tuple]) -> dict:
    """Prediction error of (predicted ms, actual ms, objective ms or None) samples, both ways:
    relative, |predicted - actual| / actual (p50, p90, signed median; p90 over requests above
    ``SHORT_MS``), and against the request's latency objective, |predicted - actual| / objective
    (p50, p90): what a wrong prediction costs a decision taken against that objective."""
    pred, actual = np.array([x[0] for x in samples]), np.array([x[1] for x in samples])
    objective = np.array([x[2] if x[2] else np.nan for x in samples], dtype=float)
    diff = pred - actual
    rel, long = diff / actual, actual > SHORT_MS
    vs_objective = np.abs(diff[~np.isnan(objective)]) / objective[~np.isnan(objective)]

    def q(values: np.ndarray, pct: float) -> float | None:
        return float(np.percentile(values, pct)) if values.size else None

    return {
        "n": len(samples),
        "p50": q(np.abs(rel), 50),
        "p90": q(np.abs(rel), 90),
        "bias": float(np.median(rel)),
        "abs_p50_ms": q(np.abs(diff), 50),
        "abs_p90_ms": q(np.abs(diff), 90),
        "n_long": int(long.sum()),
        "p90_long": q(np.abs(rel[long]), 90),
        "objective_p50": q(vs_objective, 50),
        "objective_p90": q(vs_objective, 90),
    }
