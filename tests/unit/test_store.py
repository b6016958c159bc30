"""One contract for every metadata store backend."""

import pytest

from infaas.registry import MemoryStore, SQLiteStore
from infaas.registry.redis_store import RedisStore


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.cluster)])
def store(request, tmp_path):
    if request.param == "redis":
        s = RedisStore(request.getfixturevalue("fresh_redis"))
    else:
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


def test_reads_inside_a_transaction_see_its_own_writes(store):
    store.put("variant", "a.1", "a", {"v": 1})
    store.put("variant", "a.2", "a", {"v": 2})
    with store.transaction():
        store.delete("variant", "a.1")
        store.put("variant", "a.3", "a", {"v": 3})
        store.put("variant", "b.1", "b", {"v": 4})
        assert store.get("variant", "a.1") is None
        assert [r["v"] for r in store.list("variant", "a")] == [2, 3]
        assert [r["v"] for r in store.list("variant")] == [2, 3, 4]
    assert [r["v"] for r in store.list("variant", "a")] == [2, 3]


def test_a_parent_change_moves_the_record(store):
    store.put("variant", "x", "a", {"v": 1})
    store.put("variant", "x", "b", {"v": 2})
    assert store.list("variant", "a") == [] and store.list("variant", "b") == [{"v": 2}]
    store.delete("variant", "x")
    assert store.list("variant", "b") == []


def test_the_generation_changes_on_every_write(store):
    seen = {store.generation()}
    store.put("task", "t", None, {"v": 1})
    seen.add(store.generation())
    store.delete("task", "t")
    seen.add(store.generation())
    assert len(seen) == 3


def test_a_lease_has_one_holder_and_a_new_holder_a_larger_token(store):
    a = store.acquire_lease("controller", "frontend-a", 300)
    assert a is not None and a.holder == "frontend-a"
    assert store.acquire_lease("controller", "frontend-b", 300) is None  # held
    renewed = store.acquire_lease("controller", "frontend-a", 300)
    assert renewed is not None and renewed.token == a.token  # a renewal keeps the token
    assert store.lease("controller").holder == "frontend-a"
    import time

    time.sleep(0.4)  # expired: the next taker fences the old holder out
    assert store.lease("controller") is None
    b = store.acquire_lease("controller", "frontend-b", 5000)
    assert b is not None and b.token > a.token
    assert store.acquire_lease("controller", "frontend-a", 300) is None
    assert store.release_lease("controller", "frontend-a") is False  # not its lease any more
    assert store.release_lease("controller", "frontend-b") is True
    c = store.acquire_lease("controller", "frontend-a", 300)
    assert c is not None and c.token > b.token


def test_concurrent_writers_lose_no_update(store, tmp_path, request):
    """Read-modify-write of one counter in transactions from many threads (and, for Redis and SQLite,
    separate connections, as separate frontends have): every increment lands."""
    import threading

    def connect():
        if isinstance(store, RedisStore):
            return RedisStore(store.url)
        if isinstance(store, SQLiteStore):
            return SQLiteStore(store.path)
        return store

    store.put("counter", "c", None, {"n": 0})
    stores = [connect() for _ in range(4)]

    def bump(s) -> None:
        for _ in range(25):
            with s.transaction():
                n = s.get("counter", "c")["n"]
                s.put("counter", "c", None, {"n": n + 1})

    threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter", "c") == {"n": 100}
    for s in stores:
        if s is not store:
            s.close()


@pytest.mark.cluster
def test_redis_transaction_that_outlives_its_lock_writes_nothing(fresh_redis):
    s = RedisStore(fresh_redis, lock_ttl_s=0.2)
    other = RedisStore(fresh_redis)
    import time

    with pytest.raises(RuntimeError, match="outlived its lock"), s.transaction():
        s.put("task", "t", None, {"v": "late"})
        time.sleep(0.4)  # the lock expired: another writer may have written meanwhile
        other.put("task", "t", None, {"v": "other"})
    assert s.get("task", "t") == {"v": "other"}
    s.close()
    other.close()


@pytest.mark.cluster
def test_redis_blobs_round_trip(fresh_redis):
    s = RedisStore(fresh_redis)
    s.put_blob("abc.onnx", b"\x00model")
    s.put_blob("abc.onnx", b"other")  # content-addressed: the first write stays
    assert s.get_blob("abc.onnx") == b"\x00model" and s.get_blob("missing") is None
    s.close()


def test_an_unreachable_redis_store_is_a_clear_error():
    from infaas.app import free_port
    from infaas.errors import Unavailable
    from infaas.registry.store import open_store

    with pytest.raises(Unavailable, match="cannot reach the Redis store"):
        open_store(f"redis://127.0.0.1:{free_port()}/0", ".")
