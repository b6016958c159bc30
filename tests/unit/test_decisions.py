"""The decision logs: control decisions kept apart from sampled per-query selections, filters, the
shared store between frontends, and the parsers behind ``/api/v1/decisions``."""

from __future__ import annotations

import asyncio
import time

import pytest

from infaas.decisions import KINDS, DecisionLog, parse_kinds, parse_since
from infaas.registry.store import MemoryStore


def test_query_traffic_cannot_push_control_decisions_out():
    log = DecisionLog(size=50, clock=lambda: 1_000.5)  # one second, however slow the machine
    log.log_decision("add_worker", "variant v overloaded", variant="v")
    log.log_decision("replicate", "variant v overloaded", variant="v", worker="w1")
    for i in range(3_000):  # 3,000 selections of 30 (scope, variant) pairs within that second
        log.log_decision(
            "select", f"cheapest meeting 50 ms (predicted {i % 7} ms)", scope="task t", variant=f"v{i % 30}"
        )
    kept = log.query(kinds=("add_worker", "replicate"), limit=10)
    assert [d["kind"] for d in kept] == ["add_worker", "replicate"]
    selections = log.query(kinds=("select",), limit=1000)
    # the first of each (scope, variant) per second is kept, and counts the like ones not kept
    assert len(selections) == 30 and {d["variant"] for d in selections} == {f"v{i}" for i in range(30)}
    assert sum(1 + d["similar"] for d in selections) == 3_000
    assert log.not_kept == 3_000 - len(selections) and log.counts["select"] == 3_000


def test_filters_by_kind_since_and_limit_newest_last():
    log = DecisionLog(size=100)
    for i in range(5):
        log.log_decision("load", f"load {i}", variant=f"v{i}")
    middle = log.control[2]["time"]
    log.log_decision("error", "boom")
    assert [d["reason"] for d in log.query(limit=2)] == ["load 4", "boom"]
    assert [d["reason"] for d in log.query(kinds=("load",), since=middle)] == ["load 2", "load 3", "load 4"]
    assert log.query(kinds=("select",)) == []
    assert [d["kind"] for d in log] == ["load"] * 5 + ["error"]


def test_each_frontend_reads_the_others_control_decisions_from_the_store():
    store = MemoryStore()

    def log_for(frontend: str) -> DecisionLog:
        return DecisionLog(
            100,
            frontend,
            publish=lambda who, entries: store.put("decisions", who, None, {"frontend": who, "entries": entries}),
            remote=lambda: [(b["frontend"], b["entries"]) for b in store.list("decisions")],
        )

    leader, follower = log_for("fe-a"), log_for("fe-b")
    leader.log_decision("add_worker", "overloaded")
    leader.log_decision("select", "cheapest", scope="task t", variant="v")  # selections stay local
    assert follower.query(kinds=("add_worker",)) == []  # not published yet
    asyncio.run(leader.publish())
    seen = follower.query(kinds=("add_worker", "select"))
    assert [(d["kind"], d["frontend"]) for d in seen] == [("add_worker", "fe-a")]
    follower.log_decision("leader", "fe-b leads now")
    asyncio.run(follower.publish())
    assert [d["kind"] for d in leader.query()] == ["add_worker", "select", "leader"]  # no duplicates of its own


def test_decisions_that_could_not_be_published_are_published_on_the_next_try():
    store, down = MemoryStore(), [True]

    def publish(who, entries):
        if down[0]:
            raise ConnectionError("store down")
        store.put("decisions", who, None, {"frontend": who, "entries": entries})

    log = DecisionLog(10, "fe", publish=publish)
    log.log_decision("load", "x")
    with pytest.raises(ConnectionError):
        asyncio.run(log.publish())
    down[0] = False
    asyncio.run(log.publish())
    assert [d["kind"] for d in store.list("decisions")[0]["entries"]] == ["load"]


def test_a_store_that_fails_leaves_the_frontends_own_decisions():
    def broken():
        raise ConnectionError("store down")

    log = DecisionLog(10, "fe", remote=broken)
    log.log_decision("load", "x")
    assert [d["kind"] for d in log.query()] == ["load"]


def test_since_accepts_unix_iso_and_spans_and_says_what_it_wants():
    now = 1_800_000_000.0
    assert parse_since("1733356800.5") == 1733356800.5
    assert parse_since("2026-12-05T01:30:00Z") == parse_since("2026-12-05T01:30:00") == 1796434200.0
    assert parse_since("2026-12-05T02:30:00+01:00") == 1796434200.0
    assert parse_since("10m", now) == now - 600 and parse_since("2h", now) == now - 7200
    assert abs(parse_since("90s") - (time.time() - 90)) < 5
    for bad in ("yesterday", "10x", "", "m"):
        with pytest.raises(ValueError, match="Unix time"):
            parse_since(bad)


def test_kinds_are_checked_against_the_known_ones():
    assert parse_kinds("add_worker, replicate") == ("add_worker", "replicate")
    assert "select" in KINDS and "add_worker" in KINDS
    with pytest.raises(ValueError, match="bogus.*one of: load"):
        parse_kinds("load,bogus")
    with pytest.raises(ValueError):
        parse_kinds(",")
