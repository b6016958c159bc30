"""How ``infaas workers`` writes where a variant runs."""

from infaas.cli import _placed_on


def test_workers_show_runtime_instances_where_a_replica_runs_more_than_one():
    assert _placed_on(["w0", "w1"], [3, 1]) == "w0 x3,w1"
    assert _placed_on(["w0"], []) == "w0"  # a report from before instances were counted
    assert _placed_on([], []) == ""
