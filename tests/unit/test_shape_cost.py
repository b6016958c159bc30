"""A request's cost from its shape (rows and a dynamic axis's length), one function for the selection,
the worker's admission and its batcher (pure)."""

import pytest

from infaas.policy import Objective, Option, predict_ms, select
from infaas.registry import Profile, Variant
from infaas.registry.types import axis_length
from infaas.worker.batcher import BatchQueue

# a sentence encoder's profile as the profiler records it: the batch table at the representative
# length (128), and batch-1 timings over the sequence axis at 16 .. 256
ENCODER = Profile(
    variant="enc.fp32",
    hardware="cpu",
    latency_p50_ms={1: 12.0, 2: 22.0, 4: 40.0, 8: 76.0},
    axis_latency_ms={16: 3.0, 32: 4.0, 64: 6.5, 128: 12.0, 256: 25.0},
    axis="input_ids[1], attention_mask[1], token_type_ids[1]",
    cost_per_1k=1e-5,
    load_time_ms=80.0,
)
VAR = Variant(name="enc.fp32", architecture="enc", artifact_hash="h", accuracy=1.0, max_batch=8, status="ready")


def test_the_axis_scales_the_batch_table_from_the_batch_1_timings():
    assert ENCODER.axis_factor(128) == pytest.approx(1.0)
    assert ENCODER.axis_factor(None) == 1.0 and ENCODER.axis_factor(0) == 1.0
    assert ENCODER.axis_factor(32) == pytest.approx(4.0 / 12.0)
    assert ENCODER.axis_factor(48) == pytest.approx((4.0 + 2.5 * 16 / 32) / 12.0)  # between 32 and 64
    assert ENCODER.axis_factor(9) == pytest.approx(3.0 / 12.0)  # below the shortest: its time, a floor
    assert ENCODER.axis_factor(512) == pytest.approx((25.0 + 13.0 * 256 / 128) / 12.0)  # along the last segment
    assert ENCODER.cost_ms(2, 9) == pytest.approx(22.0 * 0.25)
    assert ENCODER.cost_ms(2) == ENCODER.predict_ms(2)
    flat = Profile(variant="x", hardware="cpu", latency_p50_ms={1: 1.0})  # no axis timed: shapes do not matter
    assert flat.cost_ms(4, 1000) == flat.predict_ms(4)


def test_the_request_length_is_read_from_whichever_named_input_it_carries():
    assert axis_length(ENCODER.axis, {"input_ids": (2, 9), "attention_mask": (2, 9)}) == 9
    assert axis_length(ENCODER.axis, {"token_type_ids": (1, 40)}) == 40
    assert axis_length(ENCODER.axis, {"pixels": (1, 3)}) is None
    assert axis_length("", {"input_ids": (2, 9)}) is None


def test_a_short_request_is_admitted_where_the_representative_length_would_refuse_it():
    queue = BatchQueue(8, predict_s=lambda rows: ENCODER.predict_ms(rows) / 1000, axis_factor=ENCODER.axis_factor)
    now = 100.0
    # 2 rows at 9 tokens take ~5.5 ms; at the representative 128, 22 ms: a 20-ms deadline tells them apart
    assert queue.admit(2, 0, now + 0.020, now, length=9) is None
    refused = queue.admit(2, 0, now + 0.020, now, length=128)
    assert refused is not None and "takes about 22.0 ms" in refused.reason and not refused.overloaded
    assert queue.admit(2, 0, now + 0.020, now) is not None  # no length: the representative, as before


def test_selection_and_admission_agree_on_an_idle_worker():
    """The same estimate in both places: what the selection predicts for a request on an idle replica
    is what the worker's queue admits against, for every batch size and length."""
    option = Option(VAR, ENCODER, (("w0", 0),))
    queue = BatchQueue(8, predict_s=lambda rows: ENCODER.predict_ms(rows) / 1000, axis_factor=ENCODER.axis_factor)
    for rows in (1, 2, 3, 8):
        for length in (None, 5, 9, 40, 128, 300):
            selected = predict_ms(ENCODER, VAR.max_batch, rows, 0, length=length)
            admitted = queue.work_s(rows, length) * 1000
            assert selected == pytest.approx(admitted), (rows, length)
            c = select(Objective(latency_ms=selected * 1.01, length=length), [option], rows, "task t")
            assert c.worker == "w0"  # selection accepts it, and so does admission, with the same margin
            assert queue.admit(rows, 0, 100.0 + selected * 1.01 / 1000, 100.0, length=length) is None


def test_short_sentences_meet_an_objective_the_representative_length_misses():
    option = Option(VAR, ENCODER, (("w0", 0),))
    c = select(Objective(latency_ms=20.0, length=9), [option], 2, "task t")
    assert c.worker == "w0" and "predicted 5.50 ms" in c.reason
    with pytest.raises(Exception, match="latency_ms 20"):
        select(Objective(latency_ms=20.0, length=128), [option], 2, "task t")


def test_the_queue_ahead_is_costed_at_each_request_s_own_length():
    """Long requests queued ahead of a short one count at their length, not at the new request's."""
    queue = BatchQueue(8, predict_s=lambda rows: ENCODER.predict_ms(rows) / 1000, axis_factor=ENCODER.axis_factor)
    from infaas.worker.batcher import Pending

    now = 100.0
    for i in range(3):  # 3 requests of 2 rows at 256 tokens: ~2.08x the representative each
        queue.put(Pending(key=i, rows=2, arrival=now, length=256))
    alike = queue.work_s(8, 9)  # what costing everything at the new request's 9 tokens would say
    wait = queue.ahead_s(2, 9, offline=False)
    expected = queue.work_s(8) * (6 * ENCODER.axis_factor(256) + 2 * ENCODER.axis_factor(9)) / 8
    assert wait == pytest.approx(expected) and wait > 5 * alike
    refused = queue.admit(2, 0, now + 0.050, now, length=9)  # ~95 ms of work ahead: a 50-ms deadline fails
    assert refused is not None and "6 rows queued ahead" in refused.reason
    for i in range(3):  # taken out again: nothing left counted
        queue.cancel(i)
    assert queue.units_queued == pytest.approx(0.0) and queue.ahead_s(2, 9, offline=False) == pytest.approx(
        queue.work_s(2, 9)
    )


def test_a_batch_says_how_fast_its_variant_runs_only_when_it_ran_alone():
    from infaas.worker.executor import Activity

    activity = Activity()
    a = activity.begin("a")
    assert activity.end("a", a)  # nothing else ran
    a, a2 = activity.begin("a"), activity.begin("a")  # two instances of one variant: still alone
    assert activity.end("a", a) and activity.end("a", a2)
    a = activity.begin("a")
    b = activity.begin("b")  # b starts while a runs: neither ran alone
    assert not activity.end("b", b) and not activity.end("a", a)
    a = activity.begin("a")
    b = activity.begin("b")
    activity.end("b", b)  # b came and went during a: a time-shared its cores
    assert not activity.end("a", a)
    assert activity.end("b", activity.begin("b"))  # and after both, alone again


def test_the_selection_applies_the_worker_s_own_correction_when_it_sends_one():
    from infaas.policy.latency import LatencyModel

    model = LatencyModel()
    key = ("w0", VAR.name)
    common = dict(total_ms=20.0, queue_ms=1.0, compute_ms=18.0, batch_size=1, predicted_ms=None, from_slot=False)
    model.answered(key, **common, alone=True, profile=ENCODER)  # no scale sent: learned here (EWMA)
    assert model.slowdown[key] == pytest.approx(1.0 + 0.1 * (18.0 / 12.0 - 1.0))
    model.answered(key, **common, alone=False, profile=ENCODER, scale=1.7)  # the worker's account, as is
    assert model.slowdown[key] == 1.7
    assert model.slot("w0", VAR.name, {}, {VAR.name: ENCODER}, {VAR.name: VAR})[5] == 1.7


def test_the_running_batch_is_counted_by_how_long_it_has_run():
    """A burst's second request finds the first batch just started: all of it is ahead; a request
    arriving as that batch ends finds almost none of it; not known, half (the simulator's case)."""
    from infaas.policy import drain_ms

    b4 = ENCODER.predict_ms(4)  # 40 ms: rows in flight run in batches of 4
    assert drain_ms(ENCODER, 8, 4, 4) == pytest.approx(0.5 * b4)
    assert drain_ms(ENCODER, 8, 4, 4, running_ms=0.0) == pytest.approx(b4)
    assert drain_ms(ENCODER, 8, 4, 4, running_ms=30.0) == pytest.approx(b4 - 30.0)
    assert drain_ms(ENCODER, 8, 4, 4, running_ms=500.0) == 0.0  # overran its prediction: nothing left counted
    assert drain_ms(ENCODER, 8, 6, 4, running_ms=10.0) == pytest.approx(b4 - 10.0 + ENCODER.predict_ms(2))
    slot = ("w0", 4, 4, 1, 0.0, 1.0, (), 10.0)
    assert predict_ms(ENCODER, 8, 1, *slot[1:]) == pytest.approx(b4 - 10.0 + ENCODER.predict_ms(1))


def test_the_channel_dates_the_batch_a_worker_runs_from_its_sends_and_answers():
    import asyncio

    from infaas.cluster.channel import Channel

    class Frames:
        def write(self, writer, message):
            pass

    async def go():
        channel = Channel(Frames())
        channel.writer = object()
        assert "v" not in channel.since
        first, _ = channel.send({}, "v", 1)
        started = channel.since["v"]
        second, _ = channel.send({}, "v", 1)
        assert channel.since["v"] == started  # queued behind the running batch: its start unchanged
        await asyncio.sleep(0.01)
        channel._release(first)  # one batch ended: the next begins now
        assert channel.since["v"] > started
        channel._release(second)
        assert "v" not in channel.since  # nothing in flight: no batch running

    asyncio.run(go())


def test_a_reloaded_replica_starts_its_correction_afresh_on_both_sides():
    from infaas.policy.latency import LatencyModel

    model = LatencyModel()
    key = ("w0", VAR.name)
    model.answered(
        key,
        total_ms=1.0,
        queue_ms=0.0,
        compute_ms=1.0,
        batch_size=1,
        predicted_ms=None,
        from_slot=False,
        alone=True,
        profile=ENCODER,
        scale=0.85,
    )
    model.loaded("w0", VAR.name, 4, 1)  # its worker's new executor starts at 1.0: so does the selection
    assert model.slot("w0", VAR.name, {}, {VAR.name: ENCODER}, {VAR.name: VAR})[5] == 1.0


def test_a_learned_correction_decays_toward_the_profile_while_nothing_refreshes_it():
    """A slowdown measured while other work loaded the cores would otherwise keep a replica refused
    for good: predicted over the objective, sent nothing, never measured again. Both copies (the
    worker's admission and the selection's) decay by half every SCALE_HALF_LIFE_S of their clocks."""
    from infaas.policy import Saturated
    from infaas.policy.latency import LatencyModel
    from infaas.registry.types import SCALE_HALF_LIFE_S, decayed

    h = SCALE_HALF_LIFE_S
    assert decayed(1.8, 0.0) == 1.8 and decayed(1.8, h) == pytest.approx(1.4) and decayed(0.6, 2 * h) == 0.9
    clock = [100.0]
    queue = BatchQueue(8, predict_s=lambda rows: ENCODER.predict_ms(rows) / 1000, clock=lambda: clock[0])
    queue.observe(1, 0.012 * 1.8, alpha=1.0)  # a batch of one ran 1.8x its profile
    assert queue.scale == pytest.approx(1.8) and queue.predict_s(1) == pytest.approx(0.012 * 1.8)
    clock[0] += h
    assert queue.scale == pytest.approx(1.4)
    queue.observe(1, 0.012 * 1.4, alpha=0.5)  # measured again: from the decayed value, and its clock restarts
    assert queue.scale == pytest.approx(1.4)
    clock[0] += h
    assert queue.scale == pytest.approx(1.2)

    model, key = LatencyModel(), ("w0", VAR.name)
    common = dict(total_ms=22.0, queue_ms=0.0, compute_ms=21.6, batch_size=1, predicted_ms=None, from_slot=False)
    model.answered(key, **common, alone=True, profile=ENCODER, scale=1.8, now=50.0)

    def option(now):  # the replica as the router sees it at ``now``
        return Option(VAR, ENCODER, (model.slot("w0", VAR.name, {}, {VAR.name: ENCODER}, {VAR.name: VAR}, now=now),))

    objective = Objective(latency_ms=18.0)  # 12 ms profiled: met when idle as profiled, not at 1.8x (21.6 ms)
    with pytest.raises(Saturated):
        select(objective, [option(50.0)], 1, "model enc")
    # no answer since: 1.2x, 14.4 ms, and the replica is tried again
    assert select(objective, [option(50.0 + 2 * h)], 1, "model enc").worker == "w0"
    assert model.slot("w0", VAR.name, {}, {VAR.name: ENCODER}, {VAR.name: VAR})[5] == 1.8  # no clock: as learned


def test_a_refused_idle_replica_is_probed_at_most_once_every_probe_s():
    """What was learned about a replica is refreshed only by its answers; a replica the selection
    refuses on it gets none. The router sends one refused request there anyway, when it is idle, at
    most once every PROBE_S per replica; its answer is learned from like any other."""
    from infaas.policy.latency import PROBE_S, LatencyModel

    model = LatencyModel()
    a, b = ("w0", "lite0"), ("w1", "lite0")
    assert model.probe(a, 100.0) and not model.probe(a, 100.0 + PROBE_S / 2)
    assert model.probe(b, 100.5)  # each replica its own
    assert model.probe(a, 100.0 + PROBE_S)
    model.prune(lambda worker, variant: worker != "w0")
    assert model.probe(a, 100.0 + PROBE_S + 0.1)  # a replica gone and back starts afresh
