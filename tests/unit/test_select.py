"""Selection among loaded variants (the interim policy; the policy issue extends it)."""

import pytest

from infaas.policy import Candidate, NoCandidate, select_loaded
from infaas.registry import Variant


def var(name, acc, max_batch=16):
    return Variant(
        name=name,
        architecture=name.split(".")[0],
        artifact_hash="h",
        accuracy=acc,
        accuracy_source="measured",
        max_batch=max_batch,
    )


def test_most_accurate_loaded_wins_and_least_loaded_worker_is_used():
    a, b = var("a.v", 0.9), var("b.v", 0.95)
    d = select_loaded([Candidate(a, (("w0", 0),)), Candidate(b, (("w0", 5), ("w1", 2)))], 1, "task t")
    assert d.variant is b and d.worker == "w1"
    assert "most accurate" in d.reason and "w1" in d.reason and "0.950" in d.reason


def test_unloaded_and_too_small_variants_are_skipped():
    a, b, c = var("a.v", 0.99), var("b.v", 0.5, max_batch=2), var("c.v", 0.7)
    d = select_loaded([Candidate(a, ()), Candidate(b, (("w0", 0),)), Candidate(c, (("w0", 0),))], 4, "t")
    assert d.variant is c


def test_nothing_fits_says_why():
    a = var("a.v", 0.9, max_batch=4)
    with pytest.raises(NoCandidate, match="exceeds the largest max batch loaded for t \\(4\\)"):
        select_loaded([Candidate(a, (("w0", 0),))], 8, "t")
    with pytest.raises(NoCandidate, match="no variant of t is loaded"):
        select_loaded([Candidate(a, ())], 1, "t")


def test_unknown_accuracy_ranks_last():
    a, b = var("a.v", None), var("b.v", 0.1)
    assert select_loaded([Candidate(a, (("w", 0),)), Candidate(b, (("w", 0),))], 1, "t").variant is b
