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
