"""The door's lag measure: a loop late at every wake-up is overloaded; one long call on it is not."""

from infaas.serving.door import Door, LoopLag


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
