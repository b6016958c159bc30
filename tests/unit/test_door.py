"""The door's lag measure: a loop late at every wake-up is overloaded; one long call on it is not."""

import heapq
import statistics
import time
from collections import Counter

import pytest

from infaas.errors import Overloaded, Unavailable
from infaas.serving.door import Door, LoopLag, Passage, Throttle, accepted_status


def _lag(samples: list[tuple[float, float]], last_tick: float) -> LoopLag:
    lag = LoopLag()
    lag.samples.extend(samples)
    lag.last_tick = last_tick
    return lag


def test_one_long_call_on_the_loop_is_not_overload():
    ticks = [(10 + 0.02 * i, 0.001) for i in range(40)] + [(10.9, 0.8)]  # on time, then one 0.8 s stall
    assert _lag(ticks, 10.9).lag(10.91) < 0.01


def test_a_loop_late_at_every_wake_up_is():
    ticks = [(10 + 0.35 * i, 0.33) for i in range(4)]
    assert 0.3 < _lag(ticks, 11.05).lag(11.06) < 0.34


def test_a_loop_blocked_for_longer_than_the_window_is():
    ticks = [(10 + 0.02 * i, 0.001) for i in range(10)]
    assert _lag(ticks, 10.18).lag(11.7) > 1.4


def test_the_door_names_its_limit_in_the_reason():
    lag = _lag([(10 + 0.35 * i, 0.33) for i in range(4)], 11.05)
    door = Door("rest", 4, 250, lag)
    door.lag.ensure_running = lambda: None  # type: ignore[method-assign]  # no event loop in a unit test
    assert door.refuse(11.06)[0] == "loop_lag" and "max_loop_lag_ms 250" in door.refuse(11.06)[1]
    door.inflight = 4
    assert door.refuse(11.06)[0] == "inflight"


def test_the_throttle_refuses_nothing_while_the_workers_accept_everything_bursts_included():
    throttle = Throttle()
    for i in range(200):  # a burst of 200 in 20 ms on an idle model
        assert throttle.arrived("m", 10 + i * 1e-4) is None
    assert throttle.limit("m", 10.02) is None


def _simulate(throttle: Throttle, rate: float, seconds: float, service_s: float = 0.01, cap: int = 50):
    """A worker that serves one request each ``service_s`` in arrival order and refuses (429) one
    that finds ``cap`` queued; requests arrive at ``rate`` through the throttle. Counts of the
    second half: served, refused by the worker, refused at the door; and the served ones' waits."""
    pending: list[tuple[float, float]] = []  # (finish, queue wait) of the admitted
    last_finish = 0.0
    counts: Counter = Counter()
    waits: list[float] = []
    for i in range(int(rate * seconds)):
        now = i / rate
        second_half = now >= seconds / 2
        while pending and pending[0][0] <= now:
            finish, wait = heapq.heappop(pending)
            throttle.answered("m", finish, True, Passage(wait, service_s))
            if finish >= seconds / 2:
                counts["served"] += 1
                waits.append(wait)
        if throttle.arrived("m", now) is not None:
            counts["door"] += second_half
            continue
        if sum(1 for finish, _ in pending if finish - service_s > now) >= cap:  # queued, not started
            throttle.answered("m", now, False)
            counts["worker"] += second_half
            continue
        start = max(now, last_finish)
        last_finish = start + service_s
        heapq.heappush(pending, (last_finish, start - now))
    return counts, waits


def test_at_three_times_capacity_the_door_refuses_what_the_workers_would_and_keeps_them_busy():
    """A model whose worker serves 100 requests/s, queueing up to 50 (half a second), is offered 300/s.
    Without the door's throttle its queue would stand at 50 and every answer wait half a second; with
    it the worker stays busy, almost every refusal is the door's (a tenth of the frontend's cost of
    one by the worker), and the queue holds about the target (20 ms)."""
    counts, waits = _simulate(Throttle(), 300, 10.0)
    assert counts["served"] >= 0.97 * 500, counts  # 5 s at 100/s: the worker never starves
    assert counts["worker"] <= 0.02 * counts["door"], counts
    assert counts["door"] + counts["worker"] + counts["served"] >= 1490, counts
    assert statistics.median(waits) <= 0.03 and max(waits) < 0.25, (statistics.median(waits), max(waits))


def test_the_throttle_turns_off_once_the_workers_stop_refusing():
    throttle = Throttle()
    _simulate(throttle, 300, 4.0)
    assert throttle.limit("m", 4.0) is not None
    assert throttle.limit("m", 7.0) is None  # no refusals for 3 s: the count faded
    assert throttle.limit("other", 7.0) is None  # per model


def test_a_refusal_by_the_workers_sets_the_limit_from_what_was_in_flight():
    throttle = Throttle()
    for _ in range(40):
        throttle.arrived("m", 1.0)
    throttle.answered("m", 1.0, False)  # 40 in flight when the workers refused
    throttle.answered("m", 1.0, False)
    assert throttle.limit("m", 1.0) == pytest.approx(36.0)  # one cut: a burst of refusals is one signal
    throttle.answered("m", 1.0, True, Passage(queue_s=0.4, compute_s=0.002))  # a queue wait of 400 ms
    assert throttle.limit("m", 1.0) == pytest.approx(36.0)  # still within half a limit of the last cut
    for _ in range(18):
        throttle.answered("m", 1.0, True, Passage(queue_s=0.4, compute_s=0.002))
    assert throttle.limit("m", 1.0) == pytest.approx(18.0)  # cut by half at most


def test_the_door_refuses_with_429_and_names_the_limit():
    t = time.monotonic()  # the door reads this clock when a request leaves
    door = Door("rest", 64, 250, _lag([(t - 0.8 + 0.02 * i, 0.001) for i in range(40)], t), throttle=Throttle())
    door.lag.ensure_running = lambda: None  # type: ignore[method-assign]
    held = [door.enter(t, "m") for _ in range(3)]
    for passage in held[:2]:  # two refusals by the workers: the limit is 0.9 of the 3 in flight
        door.leave("m", accepted=False, passage=passage)
    door.enter(t, "m")
    door.enter(t, "m")
    door.enter(t, "m")  # 3 in flight, over the limit of 2.7, but the frontend is idle: it passes
    door.lag.cpu.extend([(t - 0.8, 5.0), (t, 5.6)])  # 0.6 s of CPU in 0.8 s: busy
    with pytest.raises(Overloaded) as refused:
        door.enter(t, "m")
    assert refused.value.status == 429 and "4 are in flight" in refused.value.message
    assert door.inflight == 4


def test_only_a_refusal_for_load_feeds_the_throttle():
    t = time.monotonic()
    assert not accepted_status(429)
    assert accepted_status(503) and accepted_status(200) and accepted_status(400)  # a crash, a deadline: not load
    throttle = Throttle()
    door = Door("grpc", 4, 250, _lag([(t - 0.8 + 0.02 * i, 0.001) for i in range(40)], t), throttle=throttle)
    door.lag.ensure_running = lambda: None  # type: ignore[method-assign]
    with pytest.raises(Unavailable), door.admit(t, "m"):
        raise Unavailable("worker w0 crashed")
    assert throttle.limit("m", t) is None
    for _ in range(2):
        with pytest.raises(Overloaded), door.admit(t, "m"):
            raise Overloaded("queue full", retry_after_s=0.1)
    assert throttle.limit("m", t) is not None and door.inflight == 0
