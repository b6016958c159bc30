"""The metadata store: one narrow interface, several backends.

Records are JSON documents addressed by (kind, name), optionally under a parent
(an architecture's task, a variant's architecture). The typed layer above
(:class:`infaas.registry.Registry`) is the only caller, so a backend only needs
these methods. SQLite is the embedded default; the in-memory store serves
tests; the Redis store serves several frontends sharing one registry.

``transaction()`` is the contract for multi-record writes: inside it, the
caller's reads and writes see no other writer (other threads and, for SQLite,
other processes wait), and either all writes land or none does. The Redis
store honours it with a lock and one Lua script per commit (``redis_store.RedisStore``).
Leases (``acquire_lease``) elect one controller among several frontends.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import orjson

# what the generation counts: writes that change what a catalog shows (not heartbeats, leases, jobs)
CATALOG_KINDS = frozenset({"task", "architecture", "variant", "profile"})


class MetadataStore(Protocol):
    def put(self, kind: str, name: str, parent: str | None, body: dict) -> None: ...
    def get(self, kind: str, name: str) -> dict | None: ...
    def list(self, kind: str, parent: str | None = None) -> list[dict]: ...
    def delete(self, kind: str, name: str) -> bool: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def generation(self) -> object: ...  # changes whenever anyone writes a CATALOG_KINDS record
    def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None: ...
    def lease(self, name: str) -> Lease | None: ...
    def release_lease(self, name: str, holder: str) -> bool: ...
    def close(self) -> None: ...


class Lease:
    """A held lease: who holds it and its fencing token (grows with every new holder)."""

    __slots__ = ("holder", "token", "expires_ms")

    def __init__(self, holder: str, token: int, expires_ms: int) -> None:
        self.holder, self.token, self.expires_ms = holder, token, expires_ms

    def __repr__(self) -> str:
        return f"Lease({self.holder!r}, token={self.token})"


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


class LocalLeases:
    """Leases over ``transaction``/``get``/``put`` (SQLite, memory): one machine's wall clock decides
    expiry, which holds for several processes on one SQLite file. Redis has its own (server clock)."""

    def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        """Take the lease, or renew it if ``holder`` has it; None while someone else holds it.
        A new holder gets a fencing token larger than every earlier one."""
        with self.transaction():  # type: ignore[attr-defined]
            now = now_ms()
            cur = self.get("lease", name)  # type: ignore[attr-defined]
            fence = self.get("fence", name) or {"token": 0}  # type: ignore[attr-defined]
            if cur is not None and cur["expires_ms"] > now and cur["holder"] != holder:
                return None
            if cur is None or cur["holder"] != holder or cur["expires_ms"] <= now:
                fence = {"token": fence["token"] + 1}
                self.put("fence", name, None, fence)  # type: ignore[attr-defined]
            body = {"holder": holder, "token": fence["token"], "expires_ms": now + ttl_ms}
            self.put("lease", name, None, body)  # type: ignore[attr-defined]
            return Lease(holder, body["token"], body["expires_ms"])

    def lease(self, name: str) -> Lease | None:
        cur = self.get("lease", name)  # type: ignore[attr-defined]
        if cur is None or cur["expires_ms"] <= now_ms():
            return None
        return Lease(cur["holder"], cur["token"], cur["expires_ms"])

    def release_lease(self, name: str, holder: str) -> bool:
        with self.transaction():  # type: ignore[attr-defined]
            cur = self.get("lease", name)  # type: ignore[attr-defined]
            if cur is None or cur["holder"] != holder:
                return False
            return self.delete("lease", name)  # type: ignore[attr-defined]


class MemoryStore(LocalLeases):
    """Dict-backed store for tests and throwaway servers."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[str | None, bytes]] = {}
        self._lock = threading.RLock()
        self._generation = 0

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
            self._generation += kind in CATALOG_KINDS

    def generation(self) -> int:
        return self._generation

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
            self._generation += kind in CATALOG_KINDS
            return self._rows.pop((kind, name), None) is not None

    def close(self) -> None:
        pass


class SQLiteStore(LocalLeases):
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
        self._writes = 0

    def generation(self) -> tuple[int, int]:
        """Changes whenever this store or another process on the same file writes."""
        with self._lock:
            return self._writes, self._db.execute("PRAGMA data_version").fetchone()[0]

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
            self._writes += kind in CATALOG_KINDS

    def get(self, kind: str, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM records WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def list(self, kind: str, parent: str | None = None) -> list[dict]:
        with self._lock:
            if parent is None:
                rows = self._db.execute("SELECT body FROM records WHERE kind = ? ORDER BY name", (kind,)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT body FROM records WHERE kind = ? AND parent = ? ORDER BY name",
                    (kind, parent),
                ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind, name))
            self._writes += kind in CATALOG_KINDS
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(url: str | None, data_dir: str | Path) -> MetadataStore:
    """``None``/``sqlite``: the SQLite file in the data directory; ``redis://host:port/db``: Redis."""
    if url in (None, "", "sqlite"):
        return SQLiteStore(Path(data_dir) / "registry.sqlite3")
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis
        except ImportError:
            from infaas.errors import InvalidInput

            raise InvalidInput("a Redis store needs the redis extra: pip install 'infaas[redis]'") from None
        try:
            from infaas.registry.redis_store import RedisStore

            return RedisStore(url)
        except redis.RedisError as exc:
            from infaas.errors import Unavailable

            raise Unavailable(f"cannot reach the Redis store at {url}: {exc}") from None
    from infaas.errors import InvalidInput

    raise InvalidInput(f"unknown store {url!r}: 'sqlite' or redis://host:port/db")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the metadata store could not be reached (a network error, Redis down): an
    outage to report in one line and wait out, not a bug to print a traceback for."""
    if isinstance(exc, OSError):
        return True
    try:
        import redis.exceptions as rex
    except ImportError:
        return False
    return isinstance(exc, rex.ConnectionError | rex.TimeoutError)
