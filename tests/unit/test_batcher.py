"""The batching queue on its own: a fake clock, no threads, no server."""

import pytest

from infaas.worker.batcher import BatchQueue, Pending


def item(key, rows=1, arrival=0.0, deadline=None, shape=(), drop_late=True):
    return Pending(key=key, rows=rows, arrival=arrival, shape_key=shape, deadline=deadline, drop_late=drop_late)


def test_greedy_merges_everything_queued_up_to_max_batch_in_fifo_order():
    q = BatchQueue(max_batch=4)
    for k in range(6):
        q.put(item(k))
    first = q.next(now=0.0)
    assert [p.key for p in first.batch] == [0, 1, 2, 3]
    second = q.next(now=0.0)
    assert [p.key for p in second.batch] == [4, 5]
    assert q.next(now=0.0).batch == [] and len(q) == 0


def test_rows_not_requests_fill_the_batch():
    q = BatchQueue(max_batch=8)
    q.put(item("a", rows=5))
    q.put(item("b", rows=4))  # would make 9 > 8
    q.put(item("c", rows=3))
    assert [p.key for p in q.next(0.0).batch] == ["a"]
    assert [p.key for p in q.next(0.0).batch] == ["b", "c"]


def test_oversized_single_request_still_runs_alone():
    q = BatchQueue(max_batch=2)
    q.put(item("big", rows=5))
    assert [p.key for p in q.next(0.0).batch] == ["big"]


def test_only_requests_of_the_heads_shape_join():
    q = BatchQueue(max_batch=8)
    q.put(item("a", shape=("x", (3,))))
    q.put(item("b", shape=("x", (5,))))
    q.put(item("c", shape=("x", (3,))))
    assert [p.key for p in q.next(0.0).batch] == ["a", "c"]
    assert [p.key for p in q.next(0.0).batch] == ["b"]


def test_max_delay_waits_for_a_fuller_batch_then_leaves():
    q = BatchQueue(max_batch=4, max_delay_s=0.010)
    q.put(item("a", arrival=0.0))
    formed = q.next(now=0.002)
    assert formed.batch == [] and formed.wait_s == pytest.approx(0.008)
    q.put(item("b", arrival=0.003))
    formed = q.next(now=0.010)
    assert [p.key for p in formed.batch] == ["a", "b"]


def test_full_batch_leaves_without_waiting_for_the_delay():
    q = BatchQueue(max_batch=2, max_delay_s=1.0)
    q.put(item("a"))
    q.put(item("b"))
    assert len(q.next(now=0.0).batch) == 2


def test_never_waits_past_the_earliest_deadline_minus_execution_time():
    q = BatchQueue(max_batch=8, max_delay_s=1.0, predict_s=lambda rows: 0.004 + 0.001 * rows)
    q.put(item("a", arrival=0.0, deadline=0.020))
    formed = q.next(now=0.0)
    # must leave by 0.020 - 0.005
    assert formed.batch == [] and formed.wait_s == pytest.approx(0.015)
    assert [p.key for p in q.next(now=0.015).batch] == ["a"]


def test_requests_that_cannot_meet_their_deadline_are_expired_not_served():
    q = BatchQueue(max_batch=8, predict_s=lambda rows: 0.005)
    q.put(item("late", deadline=0.004))
    q.put(item("fine", deadline=0.100))
    q.put(item("patient", deadline=0.004, drop_late=False))
    formed = q.next(now=0.0)
    assert [p.key for p in formed.expired] == ["late"]
    assert [p.key for p in formed.batch] == ["fine", "patient"]


def test_rows_queued_tracks_puts_batches_and_expiry():
    q = BatchQueue(max_batch=3)
    q.put(item("a", rows=2))
    q.put(item("b", rows=2, deadline=-1.0))
    assert q.rows_queued == 4
    q.next(now=0.0)
    assert q.rows_queued == 0
    q.put(item("c", rows=1))
    assert [p.key for p in q.drain()] == ["c"] and q.rows_queued == 0


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        BatchQueue(max_batch=0)


def test_preferred_batch_is_the_smallest_near_the_best_per_row_time():
    from infaas.worker.batcher import preferred_batch

    # ms per batch: per row 3.0, 2.0, 1.5, 1.52, 1.9
    timings = {1: 3.0, 2: 4.0, 4: 6.0, 8: 12.16, 16: 30.4}
    assert preferred_batch(timings, 16) == 4
    assert preferred_batch({1: 1.0, 2: 1.0, 4: 1.0}, 4) == 4  # per row keeps falling
    assert preferred_batch({}, 16) == 16  # nothing measured: the max batch


def test_slo_aware_waits_for_company_within_the_slack_and_the_cap():
    predict = lambda rows: 0.002 + 0.001 * rows  # noqa: E731
    q = BatchQueue(max_batch=8, predict_s=predict, slo_wait=True)
    for i in range(5):  # requests overlap (each arrives while a batch runs), 1 ms apart
        q.put(item(f"w{i}", arrival=-0.005 + 0.001 * i), running=True)
        q.next(now=-0.005 + 0.001 * i)
    q.put(item("a", arrival=0.0, deadline=0.100), running=True)
    formed = q.next(now=0.0)
    # slack says leave by 0.097, a full batch takes 0.010, but arrivals 1 ms apart say company
    # comes within 2 ms of the last one or not at all
    assert formed.batch == [] and formed.wait_s == pytest.approx(0.002)
    q.put(item("b", arrival=0.001, deadline=0.006), running=True)
    formed = q.next(now=0.001)  # b must leave by 0.006 - predict(2) = 0.002
    assert formed.batch == [] and formed.wait_s == pytest.approx(0.001)
    assert [p.key for p in q.next(now=0.002).batch] == ["a", "b"]


def test_slo_aware_stops_waiting_when_arrivals_stop():
    """Eight closed-loop clients: eight requests arrive together, then none until they are
    answered. Waiting for a full batch of 16 (18 ms here) would only delay all eight."""
    q = BatchQueue(max_batch=16, predict_s=lambda rows: 0.002 + 0.001 * rows, slo_wait=True)
    for i in range(8):
        q.put(item(f"c{i}", arrival=0.0001 * i, deadline=10.0), running=i > 0)
    q.overlap = 1.0  # as after many such rounds
    formed = q.next(now=0.0008)
    assert formed.batch == [] and formed.wait_s == pytest.approx(0.0007 + 2 * q.gap_s - 0.0008)
    assert len(q.next(now=0.0007 + 2 * q.gap_s).batch) == 8


def test_slo_aware_does_not_wait_for_company_that_cannot_come():
    """One request at a time (a single client: each arrives to an idle queue): waiting up to a
    full batch (10 ms) for a second request only adds latency. Once requests overlap, it waits."""
    q = BatchQueue(max_batch=8, predict_s=lambda rows: 0.002 + 0.001 * rows, slo_wait=True)
    for i in range(6):
        q.put(item(f"r{i}", arrival=0.03 * i, deadline=0.03 * i + 1.0))
        assert [p.key for p in q.next(now=0.03 * i).batch] == [f"r{i}"]
    for _ in range(4):
        q.put(item("busy"), running=True)  # no deadline: it leaves at once
        q.next(now=0.0)
    q.put(item("late", arrival=0.2, deadline=1.2), running=True)
    assert q.next(now=0.2).batch == []  # now it waits for company


def test_slo_aware_without_deadlines_stays_greedy():
    q = BatchQueue(max_batch=8, predict_s=lambda rows: 0.01, slo_wait=True)
    q.put(item("a"))
    assert [p.key for p in q.next(now=0.0).batch] == ["a"]


def test_online_requests_go_ahead_of_queued_offline_ones():
    q = BatchQueue(max_batch=2)
    q.put(Pending("job-1", 2, 0.0, offline=True))
    q.put(Pending("job-2", 2, 0.0, offline=True))
    q.put(Pending("online-1", 1, 0.1))
    q.put(Pending("online-2", 1, 0.2))
    q.put(Pending("job-3", 2, 0.3, offline=True))
    order = []
    while len(q):
        order += [p.key for p in q.next(1.0).batch]
    assert order == ["online-1", "online-2", "job-1", "job-2", "job-3"]
    assert q.rows_queued == 0


# ---- admission (load shedding), all pure -------------------------------------------------------
def fit_ms(slope, intercept):
    return lambda rows: (slope * rows + intercept) / 1000


def test_admission_refuses_what_cannot_finish_behind_the_queue_before_it_costs_compute():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2))  # a batch of 4 takes 42 ms
    assert q.admit(rows=1, nbytes=0, deadline=1.0, now=0.0) is None  # empty queue: 12 ms
    for k in range(8):  # 8 rows queued: two full batches, 84 ms
        q.put(item(k, deadline=10.0))
    assert q.work_s(8) == pytest.approx(0.084)
    refusal = q.admit(rows=1, nbytes=0, deadline=0.090, now=0.0)  # 84 + 12 = 96 ms > 90
    assert refusal is not None and refusal.overloaded and "8 rows queued ahead" in refusal.reason
    assert refusal.retry_after_s == pytest.approx(0.006)
    assert q.admit(rows=1, nbytes=0, deadline=0.100, now=0.0) is None
    # the batch an instance is running counts too
    assert q.admit(rows=1, nbytes=0, deadline=0.100, now=0.0, busy_s=0.02) is not None


def test_a_request_that_cannot_make_its_deadline_even_alone_is_not_called_an_overload():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2))
    refusal = q.admit(rows=4, nbytes=0, deadline=0.010, now=0.0)
    assert refusal is not None and not refusal.overloaded and "takes about 42.0 ms" in refusal.reason


def test_offline_rows_queued_do_not_delay_online_admission():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2))
    for k in range(16):
        q.put(Pending(key=k, rows=1, arrival=0.0, offline=True))
    assert q.admit(rows=1, nbytes=0, deadline=0.05, now=0.0) is None  # online goes ahead of them
    assert q.admit(rows=1, nbytes=0, deadline=0.05, now=0.0, offline=True) is not None


def test_queue_is_bounded_in_time_and_bytes():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2), max_wait_s=0.1, max_bytes=1000)
    for k in range(8):
        q.put(Pending(key=k, rows=1, arrival=0.0, nbytes=100))
    assert q.bytes_queued == 800
    no_deadline = q.admit(rows=4, nbytes=100, deadline=None, now=0.0)  # 126 ms of work > 100 ms
    assert no_deadline is not None and "past its bound of 100 ms" in no_deadline.reason
    too_big = q.admit(rows=1, nbytes=300, deadline=None, now=0.0)
    assert too_big is not None and "bytes" in too_big.reason
    q.next(0.0)  # a batch of 4 leaves: 400 bytes and 42 ms freed
    assert q.bytes_queued == 400 and q.admit(rows=1, nbytes=300, deadline=None, now=0.0) is None


def test_cancel_takes_a_queued_request_out_and_its_rows_with_it():
    q = BatchQueue(max_batch=4)
    for k in range(3):
        q.put(Pending(key=k, rows=2, arrival=0.0, nbytes=10))
    assert q.cancel(1).key == 1 and q.cancel(1) is None
    assert q.rows_queued == 4 and q.bytes_queued == 20
    assert [p.key for p in q.next(0.0).batch] == [0, 2]


def test_measured_batch_times_correct_the_profile():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 0))
    for _ in range(30):  # this machine runs the model 3x slower than profiled
        q.observe(4, 0.120)
    assert q.scale == pytest.approx(3.0, rel=0.01)
    assert q.predict_s(4) == pytest.approx(0.120, rel=0.01)
    q.observe(4, 100.0)  # one stall moves the scale, bounded
    assert q.scale <= 10.0


def test_a_backlogged_queue_is_costed_at_the_rate_it_drains_not_its_compute():
    """A small model at a high request rate: each batch computes as profiled (42 ms), but replies and
    new requests' decoding take the worker another 21 ms a batch. Admission counts the queue ahead at
    63 ms a batch, while a batch's own prediction stays its compute; without a backlog it decays."""
    clock = [0.0]
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2), clock=lambda: clock[0])
    for k in range(8):
        q.put(item(k, deadline=10.0))
    assert q.admit(rows=1, nbytes=0, deadline=0.100, now=0.0) is None  # 84 + 12 ms of compute
    for _ in range(40):
        q.observe(4, 0.042)
        q.observe_backlogged(4, 0.063)
    assert q.scale == pytest.approx(1.0) and q.predict_s(4) == pytest.approx(0.042)
    assert q.backlog_scale == pytest.approx(1.5, rel=0.01)
    assert q.work_s(8) == pytest.approx(0.126, rel=0.01)
    refusal = q.admit(rows=1, nbytes=0, deadline=0.100, now=0.0)  # 126 + 18 ms: past 100
    assert refusal is not None and "8 rows queued ahead" in refusal.reason
    clock[0] = 60.0  # a minute with no backlog: back to the profile
    assert q.backlog_scale == pytest.approx(1.0, abs=0.01)
    for _ in range(40):  # a slowdown of the compute itself is never undercut by the drain rate
        q.observe(4, 0.084)
    assert q.backlog_scale == pytest.approx(q.scale)


def test_admission_off_queues_everything_within_the_byte_bound():
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2), max_wait_s=0.1, max_bytes=100, admission=False)
    for k in range(40):
        q.put(Pending(key=k, rows=1, arrival=0.0, nbytes=1, deadline=0.05))
    assert q.admit(rows=1, nbytes=1, deadline=0.05, now=0.0) is None  # would be refused with admission on
    assert q.admit(rows=1, nbytes=100, deadline=None, now=0.0) is not None  # bytes are still bounded


def test_a_standing_queue_is_refused_when_overloaded_but_a_burst_or_a_closed_loop_is_not():
    """Batches of 4 take 42 ms (target: two of them, 84 ms; interval: four targets, 336 ms). A burst
    queues up to its deadline, and without refusals (a closed loop of clients keeps a queue as long
    as there are clients) a standing queue is left alone; once the queue has refused a request, and
    every batch has started over 84 ms after its oldest request for 336 ms, a request that would wait
    past 84 ms is refused, though its deadline is far; when a batch starts within the target again,
    the queue takes up to its deadline again."""
    q = BatchQueue(max_batch=4, predict_s=fit_ms(10, 2))
    assert q.standing_target_s() == pytest.approx(0.084)
    for k in range(60):  # a burst at t=0: 15 batches, 630 ms of work, deadlines 10 s away
        assert q.admit(rows=1, nbytes=0, deadline=10.0, now=0.0) is None
        q.put(item(k, arrival=0.0, deadline=10.0))
    now = 0.0
    for _ in range(12):
        assert q.next(now).batch
        now += 0.042
    assert not q.standing(now)  # standing since 126 ms, but nothing refused: not overloaded
    assert q.admit(rows=1, nbytes=0, deadline=now + 0.05, now=now) is not None  # its own deadline: refused
    assert q.standing(now)
    refusal = q.admit(rows=1, nbytes=0, deadline=now + 10.0, now=now)
    assert refusal is not None and "standing queue" in refusal.reason and refusal.overloaded
    while len(q):
        q.next(now)
        now += 0.042
    q.put(item("late", arrival=now - 0.01, deadline=now + 10))
    q.next(now)  # started 10 ms after it arrived: not standing
    assert not q.standing(now + 1.0)
    for k in range(8):
        q.put(item(k, arrival=now, deadline=now + 10))
    assert q.admit(rows=1, nbytes=0, deadline=now + 10.0, now=now) is None  # 8 queued, 126 ms: absorbed
