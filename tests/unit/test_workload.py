"""Workload patterns and traces (pure, seeded)."""

import json

import numpy as np
import pytest

from infaas.workload import App, arrivals, error_stats, generate, load_apps, read_minute_counts, read_trace, write_trace


def app(kind, **p):
    return App(f"a-{kind}", "t", {"latency_ms": 50}, {"kind": kind, **p})


def test_rates_and_shapes_of_each_pattern():
    rng = np.random.default_rng(0)
    steady = arrivals(app("poisson", rate=50), 200, rng)
    assert len(steady) == pytest.approx(50 * 200, rel=0.05)
    gaps = np.diff(steady)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)  # Poisson: CV 1
    bursty = arrivals(app("bursts", rate=50, cv=3.5), 400, rng)
    gaps = np.diff(bursty)
    assert len(bursty) == pytest.approx(50 * 400, rel=0.15)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(3.5, rel=0.15)
    ramp = arrivals(app("ramp", start=10, end=90), 100, rng)
    first, last = (ramp < 20).sum(), (ramp >= 80).sum()
    assert first == pytest.approx(20 * 18, rel=0.2) and last == pytest.approx(20 * 82, rel=0.1)
    day = app("diurnal", mean=40, amplitude=0.8, period_s=100)
    t = arrivals(day, 100, rng)
    crest, trough = ((t >= 15) & (t < 35)).sum(), ((t >= 65) & (t < 85)).sum()
    assert crest > 3 * trough
    assert day.mean_rate(100) == pytest.approx(40) and app("ramp", start=10, end=90).mean_rate(5) == 50


def test_same_seed_same_trace_and_round_trip(tmp_path):
    apps = [app("poisson", rate=5), app("bursts", rate=3, cv=3)]
    a, b, c = generate(apps, 30, seed=1), generate(apps, 30, seed=1), generate(apps, 30, seed=2)
    assert a == b and a != c
    assert [t for t, _ in a] == sorted(t for t, _ in a) and {n for _, n in a} == {"a-poisson", "a-bursts"}
    path = tmp_path / "t.csv"
    write_trace(path, a)
    back = read_trace(path, apps)
    assert [n for _, n in back] == [n for _, n in a]
    assert np.allclose([t for t, _ in back], [t for t, _ in a], atol=1e-6)


def test_bad_traces_and_apps_are_refused_with_the_line(tmp_path):
    apps = [app("poisson", rate=5)]
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,app\n0.5,a-poisson\n1.0,nobody\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: app 'nobody' is not in the apps file"):
        read_trace(bad, apps)
    bad.write_text("t_s,app\nsoon,a-poisson\n")
    with pytest.raises(ValueError, match="is not a number"):
        read_trace(bad)
    bad.write_text("when,who\n1,a\n")
    with pytest.raises(ValueError, match="needs the columns t_s,app"):
        read_trace(bad)
    spec = tmp_path / "apps.json"
    spec.write_text(json.dumps({"apps": [{"name": "x", "task": "t", "pattern": {"kind": "sometimes"}}]}))
    with pytest.raises(ValueError, match="pattern kind 'sometimes' is not one of"):
        load_apps(spec)


def test_minute_counts_become_a_trace_with_each_minutes_count_and_burstiness(tmp_path):
    path = tmp_path / "minutes.csv"
    path.write_text("minute,app,count\n0,a,120\n0,b,30\n1,a,0\n2,a,600\n")
    calm, bursty = read_minute_counts(path, cv=1.0, seed=3), read_minute_counts(path, cv=4.0, seed=3)
    assert calm == read_minute_counts(path, cv=1.0, seed=3)  # the same file and seed, the same trace
    for trace in (calm, bursty):
        assert [t for t, _ in trace] == sorted(t for t, _ in trace)
        per = {(int(t // 60), app): 0 for t, app in trace}
        for t, app in trace:
            per[(int(t // 60), app)] += 1
        assert per == {(0, "a"): 120, (0, "b"): 30, (2, "a"): 600}
    gaps = lambda trace: np.diff([t for t, app in trace if app == "a" and t >= 120])  # noqa: E731
    cv_of = lambda g: float(np.std(g) / np.mean(g))  # noqa: E731
    assert cv_of(gaps(calm)) < 1.3 < 2.0 < cv_of(gaps(bursty))


@pytest.mark.parametrize(
    "text, message",
    [
        ("minute,app\n0,a\n", "columns minute,app,count"),
        ("minute,app,count\n0,a,x\n", ":2: minute and count must be whole numbers"),
        ("minute,app,count\n0,a,-1\n", ":2: minute and count must be >= 0"),
        ("minute,app,count\n2,a,1\n1,a,1\n", ":3: minute 1 comes after minute 2"),
        ("minute,app,count\n0,zz,1\n", ":2: app 'zz' is not in the apps file"),
    ],
)
def test_bad_minute_counts_name_the_line(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_minute_counts(path, apps=[App("a", "t", {}, {"kind": "poisson", "rate": 1})])


def test_prediction_error_relative_and_against_the_objective():
    # (predicted, actual, objective): errors +0.5, -0.5 on 1-ms requests (50 % relative, 1 % of a
    # 50-ms objective), +2 on a 10-ms one (20 %, 10 % of 20 ms) and +4 on a 20-ms one without one
    e = error_stats([(1.5, 1.0, 50.0), (0.5, 1.0, 50.0), (12.0, 10.0, 20.0), (24.0, 20.0, None)])
    assert e["n"] == 4 and e["n_long"] == 2
    assert e["p50"] == pytest.approx(0.35)  # |rel| 0.5, 0.5, 0.2, 0.2
    assert e["bias"] == pytest.approx(0.2)  # signed 0.5, -0.5, 0.2, 0.2
    assert e["p90_long"] == pytest.approx(0.2)  # requests over 2 ms only
    assert e["objective_p50"] == pytest.approx(0.01)  # 0.01, 0.01, 0.1 (the last has no objective)
    assert e["objective_p90"] == pytest.approx(0.082)
    assert error_stats([(1.0, 1.5, None)])["objective_p90"] is None
