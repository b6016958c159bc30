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
