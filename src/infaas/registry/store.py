"""The metadata store: one narrow interface, several backends.

Records are JSON documents addressed by (kind, name), optionally under a parent
(an architecture's task, a variant's architecture). The typed layer above
(:class:`infaas.registry.Registry`) is the only caller, so a backend only needs
these methods. SQLite is the embedded default; the in-memory store serves
tests; a Redis store can be added without touching callers.

``transaction()`` is the contract for multi-record writes: inside it, the
caller's reads and writes see no other writer (other threads and, for SQLite,
other processes wait), and either all writes land or none does. The Redis
store must honour the same contract (MULTI/EXEC with WATCH, or a script).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import orjson


class MetadataStore(Protocol):
    def put(self, kind: str, name: str, parent: str | None, body: dict) -> None: ...
    def get(self, kind: str, name: str) -> dict | None: ...
    def list(self, kind: str, parent: str | None = None) -> list[dict]: ...
    def delete(self, kind: str, name: str) -> bool: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


class MemoryStore:
    """Dict-backed store for tests and throwaway servers."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[str | None, bytes]] = {}
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A nested transaction joins the outer one."""
        with self._lock:
            saved = dict(self._rows)
            try:
                yield
            except BaseException:
                self._rows = saved
                raise

    def put(self, kind: str, name: str, parent: str | None, body: dict) -> None:
        with self._lock:
            self._rows[(kind, name)] = (parent, orjson.dumps(body))

    def get(self, kind: str, name: str) -> dict | None:
        with self._lock:
            row = self._rows.get((kind, name))
        return None if row is None else orjson.loads(row[1])

    def list(self, kind: str, parent: str | None = None) -> list[dict]:
        with self._lock:
            rows = sorted((n, p, b) for (k, n), (p, b) in self._rows.items() if k == kind)
        return [orjson.loads(b) for _, p, b in rows if parent is None or p == parent]

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            return self._rows.pop((kind, name), None) is not None

    def close(self) -> None:
        pass


class SQLiteStore:
    """SQLite file in WAL mode: embedded, durable, nothing to start."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS records (
        kind   TEXT NOT NULL,
        name   TEXT NOT NULL,
        parent TEXT,
        body   TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE INDEX IF NOT EXISTS records_parent ON records (kind, parent);
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(self._SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: the write lock is taken at once, so a check made inside holds until COMMIT
        (other processes on the same file wait up to the busy timeout)."""
        with self._lock:
            if self._db.in_transaction:  # nested: joins the outer transaction
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, kind: str, name: str, parent: str | None, body: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (kind, name, parent, body) VALUES (?, ?, ?, ?)",
                (kind, name, parent, orjson.dumps(body).decode()),
            )

    def get(self, kind: str, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM records WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def list(self, kind: str, parent: str | None = None) -> list[dict]:
        with self._lock:
            if parent is None:
                rows = self._db.execute(
                    "SELECT body FROM records WHERE kind = ? ORDER BY name", (kind,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT body FROM records WHERE kind = ? AND parent = ? ORDER BY name",
                    (kind, parent),
                ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind, name))
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
