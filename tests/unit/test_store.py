"""One contract for every metadata store backend."""

import pytest

from infaas.registry import MemoryStore, SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "r.sqlite3")
    yield s
    s.close()


def test_put_get_round_trip(store):
    store.put("variant", "a.fp32", "a", {"name": "a.fp32", "x": [1, 2], "y": {"z": None}})
    assert store.get("variant", "a.fp32") == {"name": "a.fp32", "x": [1, 2], "y": {"z": None}}
    assert store.get("variant", "missing") is None
    assert store.get("task", "a.fp32") is None  # kinds are separate


def test_list_by_kind_and_parent_sorted_by_name(store):
    store.put("variant", "b.1", "b", {"n": "b.1"})
    store.put("variant", "a.2", "a", {"n": "a.2"})
    store.put("variant", "a.1", "a", {"n": "a.1"})
    store.put("task", "t", None, {"n": "t"})
    assert [r["n"] for r in store.list("variant")] == ["a.1", "a.2", "b.1"]
    assert [r["n"] for r in store.list("variant", "a")] == ["a.1", "a.2"]
    assert store.list("variant", "zzz") == []


def test_put_replaces_and_delete_reports(store):
    store.put("task", "t", None, {"v": 1})
    store.put("task", "t", None, {"v": 2})
    assert store.get("task", "t") == {"v": 2}
    assert store.delete("task", "t") is True
    assert store.delete("task", "t") is False
    assert store.list("task") == []


def test_sqlite_persists_across_reopen(tmp_path):
    s = SQLiteStore(tmp_path / "r.sqlite3")
    s.put("task", "t", None, {"v": 1})
    s.close()
    s2 = SQLiteStore(tmp_path / "r.sqlite3")
    assert s2.get("task", "t") == {"v": 1}
    assert s2._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s2.close()


def test_a_transaction_lands_whole_or_not_at_all(store):
    store.put("task", "t", None, {"v": 1})
    with pytest.raises(RuntimeError), store.transaction():
        store.put("architecture", "a", "t", {"v": 1})
        store.delete("task", "t")
        raise RuntimeError("crash between the writes")
    assert store.get("task", "t") == {"v": 1} and store.get("architecture", "a") is None
    with store.transaction():
        store.put("architecture", "a", "t", {"v": 1})
        store.put("variant", "a.1", "a", {"v": 1})
    assert store.get("variant", "a.1") == {"v": 1}


def test_a_check_inside_a_transaction_holds_until_it_commits(store):
    """Two threads each check that a name is free, then take it: exactly one gets it."""
    import threading

    won, barrier = [], threading.Barrier(4)

    def claim(who: int) -> None:
        barrier.wait()
        with store.transaction():
            if store.get("architecture", "x") is None:
                store.put("architecture", "x", None, {"who": who})
                won.append(who)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and store.get("architecture", "x") == {"who": won[0]}


def test_sqlite_transactions_exclude_another_process_on_the_same_file(tmp_path):
    """Two stores on one file (as a server and `infaas register --data-dir`): the second writer waits."""
    import threading

    a, b = SQLiteStore(tmp_path / "r.sqlite3"), SQLiteStore(tmp_path / "r.sqlite3")
    entered = threading.Event()
    order = []

    def second() -> None:
        entered.wait()
        with b.transaction():
            order.append("b" if b.get("task", "t") is not None else "b-before-a")

    t = threading.Thread(target=second)
    t.start()
    with a.transaction():
        entered.set()
        import time

        time.sleep(0.2)
        a.put("task", "t", None, {"v": 1})
        order.append("a")
    t.join()
    assert order == ["a", "b"]
    a.close()
    b.close()


def test_nested_transactions_join_the_outer_one(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put("task", "t", None, {"v": 1})
        with store.transaction():
            store.put("architecture", "a", "t", {"v": 1})
        raise RuntimeError("the outer one fails after the inner one finished")
    assert store.get("task", "t") is None and store.get("architecture", "a") is None
