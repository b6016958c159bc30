"""The simulator's engine: simulated time, the real batch queue, and queueing theory as the check."""

import random
import statistics

import pytest

from infaas.sim import EventQueue, ServiceTime, SimReplica, poisson_arrivals


def run(rate: float, seconds: float, seed: int, deadline: float | None = None, **replica) -> SimReplica:
    events = EventQueue()
    rng = random.Random(seed)
    service = replica.pop("service", ServiceTime({1: (10.0, 10.0)}))
    rep = SimReplica(events, service, rng, **replica)

    def arrive() -> None:
        rep.submit(1, None if deadline is None else events.now + deadline)

    for t in poisson_arrivals(rate, seconds, rng):
        events.at(t, arrive)
    events.run()
    return rep


def test_events_run_in_time_order_and_the_past_is_refused():
    events, seen = EventQueue(), []
    for t in (0.3, 0.1, 0.2, 0.1):
        events.at(t, lambda t=t: seen.append((t, events.now)))
    assert events.run() == 4
    assert seen == [(0.1, 0.1), (0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]
    with pytest.raises(ValueError, match="before now"):
        events.at(0.25, lambda: None)


def test_m_d_1_mean_wait_matches_the_formula():
    """Constant service D = 10 ms, Poisson arrivals at half of capacity, batches of one: the mean wait
    in queue is rho * D / (2 (1 - rho)) = 5 ms (Pollaczek-Khinchine)."""
    rep = run(rate=50.0, seconds=4000.0, seed=1, max_batch=1, admission=False)
    waits = [o.wait_s for o in rep.outcomes]
    assert all(o.status == "served" for o in rep.outcomes) and len(waits) > 150_000
    assert statistics.fmean(waits) == pytest.approx(0.005, rel=0.05)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    a, b, c = (run(60.0, 200.0, s, service=ServiceTime({1: (10.0, 25.0)})) for s in (7, 7, 8))
    key = [(o.arrival, o.status, o.finished) for o in a.outcomes]
    assert key == [(o.arrival, o.status, o.finished) for o in b.outcomes]
    assert key != [(o.arrival, o.status, o.finished) for o in c.outcomes]


def test_service_times_follow_the_table_median_and_tail():
    service, rng = ServiceTime({1: (10.0, 30.0), 8: (40.0, 60.0)}), random.Random(0)
    draws = sorted(service.draw_s(1, rng) for _ in range(20_000))
    assert draws[len(draws) // 2] == pytest.approx(0.010, rel=0.03)
    assert draws[int(0.99 * len(draws))] == pytest.approx(0.030, rel=0.08)
    assert service.percentiles_ms(4) == pytest.approx((10 + 3 / 7 * 30, 30 + 3 / 7 * 30))
    assert service.percentiles_ms(16) == (80.0, 120.0)
    with pytest.raises(ValueError, match="p50"):
        ServiceTime({1: (10.0, 5.0)})


def test_overload_is_shed_at_admission_and_batching_raises_throughput():
    """Twice the capacity of batch-1 serving, 100 ms deadlines: batches of one refuse about half;
    batches of up to 8 (20 ms for 8 rows: twice the offered rate) serve nearly all within it."""
    single = run(200.0, 60.0, 3, max_batch=1, deadline=0.1)
    batched = run(200.0, 60.0, 3, max_batch=8, deadline=0.1, service=ServiceTime({1: (10.0, 10.0), 8: (20.0, 20.0)}))
    served = lambda rep: [o for o in rep.outcomes if o.status == "served"]  # noqa: E731
    assert 0.4 < len(served(single)) / len(single.outcomes) < 0.6
    assert len(served(batched)) / len(batched.outcomes) > 0.99
    assert all(o.latency_s <= 0.1 + 1e-9 for o in served(single) + served(batched))
    assert max(o.batch_size for o in batched.outcomes) > 1
