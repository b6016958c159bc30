"""The door's lag measure: a loop late at every wake-up is overloaded; one long call on it is not."""

import random
import time

import pytest

from infaas.errors import Overloaded, Unavailable
from infaas.serving.door import Door, LoopLag, Throttle, accepted_status


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
    throttle = Throttle(1.5, random_draw=lambda: 0.0)  # every draw would refuse: only the share decides
    for i in range(200):  # a burst of 200 in 20 ms on an idle model
        assert throttle.arrived("m", 10 + i * 1e-4) is None
    assert throttle.share("m", 10.02) == 0.0


def test_at_three_times_capacity_the_throttle_passes_k_times_what_the_workers_accept():
    """A model whose workers accept 100 requests/s is offered 300/s: the door settles at refusing half,
    passing 1.5x what is accepted; the workers refuse the other third of what passes."""
    throttle = Throttle(1.5, random_draw=random.Random(7).random)
    passed = refused_here = 0
    accepted_at = 0.0
    for i in range(3000):  # 10 s at 300/s
        now = i / 300
        if throttle.arrived("m", now) is not None:
            refused_here += i >= 1500
            continue
        passed += i >= 1500
        ok = accepted_at - now <= 0.05  # the workers take one every 10 ms and queue up to 50 ms of them
        accepted_at = max(accepted_at, now) + 0.01 if ok else accepted_at
        throttle.answered("m", now, accepted=ok)
    assert 0.4 < refused_here / 1500 < 0.6, refused_here  # second half: settled
    assert 1.3 < passed / 500 < 1.7, passed  # 500 accepted in 5 s


def test_the_throttle_lets_a_tenth_through_and_recovers_within_seconds_of_the_workers():
    throttle = Throttle(1.5, random_draw=random.Random(3).random)
    for i in range(1000):  # 5 s at 200/s, every request refused by a worker that crashed
        if throttle.arrived("m", i / 200) is None:
            throttle.answered("m", i / 200, accepted=False)
    assert throttle.share("m", 5.0) == 0.9
    for i in range(1000, 2000):  # it is back: everything that passes is accepted
        throttle.arrived("m", i / 200)
    assert throttle.share("m", 10.0) == 0.0
    assert throttle.share("other", 10.0) == 0.0  # per model


def test_the_door_refuses_with_429_and_names_the_throttle():
    t = time.monotonic()  # the door reads this clock when a request leaves
    throttle = Throttle(1.5, random_draw=lambda: 0.0)
    door = Door("rest", 4, 250, _lag([(t - 0.8 + 0.02 * i, 0.001) for i in range(40)], t), throttle=throttle)
    door.lag.ensure_running = lambda: None  # type: ignore[method-assign]
    for _ in range(2):  # two refusals by the workers
        door.enter(t, "m")
        door.leave("m", accepted=False)
    door.enter(t, "m")  # the frontend is idle: refusing here saves nothing, the request passes
    door.leave("m", accepted=False)
    door.lag.cpu.extend([(t - 0.8, 5.0), (t, 5.6)])  # 0.6 s of CPU in 0.8 s: busy
    with pytest.raises(Overloaded) as refused:
        door.enter(t, "m")
    assert refused.value.status == 429 and "door_throttle_k 1.5" in refused.value.message
    assert door.inflight == 0


def test_only_a_refusal_for_load_feeds_the_throttle():
    t = time.monotonic()
    assert not accepted_status(429)
    assert accepted_status(503) and accepted_status(200) and accepted_status(400)  # a crash, a deadline: not load
    throttle = Throttle(1.5, random_draw=lambda: 0.0)
    door = Door("grpc", 4, 250, _lag([(t - 0.8 + 0.02 * i, 0.001) for i in range(40)], t), throttle=throttle)
    door.lag.ensure_running = lambda: None  # type: ignore[method-assign]
    with pytest.raises(Unavailable), door.admit(t, "m"):
        raise Unavailable("worker w0 crashed")
    assert throttle.share("m", t) == 0.0
    for _ in range(2):
        with pytest.raises(Overloaded), door.admit(t, "m"):
            raise Overloaded("queue full", retry_after_s=0.1)
    assert throttle.share("m", t) > 0 and door.inflight == 0
