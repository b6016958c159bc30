"""The metadata store: one narrow interface, several backends.

Records are JSON documents addressed by (kind, name), optionally under a parent
(an architecture's task, a variant's architecture). The typed layer above
(:class:`infaas.registry.Registry`) is the only caller, so a backend only needs
these methods. SQLite is the embedded default; the in-memory store serves
tests; the Redis store serves several frontends sharing one registry.

``transaction()`` is the contract for multi-record writes: inside it, the
caller's reads and writes see no other writer (other threads and, for SQLite,
other processes wait), and either all writes land or none does. The Redis
store honours it with a lock and one Lua script per commit (see RedisStore).
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


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


class LocalLeases:
    """Leases over ``transaction``/``get``/``put`` (SQLite, memory): one machine's wall clock decides
    expiry, which holds for several processes on one SQLite file. Redis has its own (server clock)."""

    def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        """Take the lease, or renew it if ``holder`` has it; None while someone else holds it.
        A new holder gets a fencing token larger than every earlier one."""
        with self.transaction():  # type: ignore[attr-defined]
            now = _now_ms()
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
        if cur is None or cur["expires_ms"] <= _now_ms():
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
            self._writes += kind in CATALOG_KINDS
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()



# Every write, alone or a transaction's whole batch, is one Lua script: it lands only while the store
# is unlocked or locked by the writer's own transaction (KEYS[1] the lock, ARGV[1] the writer's token),
# bumps the generation when ARGV[2] is '1' (a catalog kind was written) and keeps the parent index.
# ARGV[3..]: op, kind, name, parent, body (op "d": delete), five by five.
_APPLY = """
local lock = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' then
  if lock ~= ARGV[1] then return -2 end
elseif lock then return -1 end
local p = KEYS[2]
local deleted = 0
for i = 3, #ARGV, 5 do
  local op, kind, name, parent, body = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local old = redis.call('HGET', p .. ':parent:' .. kind, name)
  if old and old ~= '' then redis.call('SREM', p .. ':children:' .. kind .. ':' .. old, name) end
  if op == 'p' then
    redis.call('HSET', p .. ':body:' .. kind, name, body)
    redis.call('HSET', p .. ':parent:' .. kind, name, parent)
    if parent ~= '' then redis.call('SADD', p .. ':children:' .. kind .. ':' .. parent, name) end
  else
    deleted = deleted + redis.call('HDEL', p .. ':body:' .. kind, name)
    redis.call('HDEL', p .. ':parent:' .. kind, name)
  end
end
if ARGV[2] == '1' then redis.call('INCR', p .. ':generation') end
return deleted
"""

# A lease: taken when free or expired (a new fencing token), renewed by its holder; Redis's clock decides.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, token = string.match(cur, '^(.*)|(%d+)$')
  if holder ~= ARGV[1] then return nil end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(token), redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return {token, tonumber(ARGV[2])}
"""

_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*)|%d+$') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """The metadata store in Redis, for several frontends sharing one registry and live state.

    Records: a hash per kind (name -> JSON body), a hash per kind of parents and a set per (kind,
    parent). A transaction takes the store's lock (``SET NX PX`` with a random token, retried until
    ``lock_wait_s``), reads see its own pending writes, and its writes land in one Lua script that
    first checks the lock is still its own: all of them, or (the lock expired, an exception) none.
    Writes outside a transaction wait while another transaction holds the lock, so a check made
    inside a transaction holds until it commits, as with SQLite's ``BEGIN IMMEDIATE``. Model
    artifacts can be kept here too (``put_blob``), so frontends and workers on other machines
    need no shared file system.
    """

    def __init__(self, url: str, prefix: str = "infaas", lock_ttl_s: float = 30.0,
                 lock_wait_s: float = 30.0) -> None:  # fmt: skip
        import redis

        self.url = url
        self.prefix = prefix
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.lock_wait_s = lock_wait_s
        self._redis = redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)
        self._redis.ping()
        self._apply = self._redis.register_script(_APPLY)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._lock_key = f"{prefix}:lock"
        self._local = threading.local()  # this thread's open transaction: token, pending writes

    # ---- transactions -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A nested transaction joins the outer one."""
        import os
        import time

        if getattr(self._local, "token", None):
            yield
            return
        token = os.urandom(12).hex()
        give_up = time.monotonic() + self.lock_wait_s
        delay = 0.002
        while not self._redis.set(self._lock_key, token, nx=True, px=self.lock_ttl_ms):
            if time.monotonic() > give_up:
                from infaas.errors import Unavailable

                raise Unavailable(f"the Redis store stayed locked for {self.lock_wait_s:g} s "
                                  "(a writer holding it died, or is slow; it expires on its own)")  # fmt: skip
            time.sleep(delay)
            delay = min(0.05, delay * 2)
        self._local.token, self._local.pending = token, {}
        try:
            yield
            pending = self._local.pending
            if pending and self._write(pending, token) == -2:
                raise RuntimeError(
                    f"Redis store transaction outlived its lock ({self.lock_ttl_ms} ms): nothing was written")
        finally:
            self._local.token, self._local.pending = None, None
            self._release_lock(token)

    def _release_lock(self, token: str) -> None:
        self._redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                         "return 0", 1, self._lock_key, token)  # fmt: skip

    def _write(self, ops: dict[tuple[str, str], tuple[str | None, bytes] | None], token: str) -> int:
        import time

        args: list = [token, "1" if any(kind in CATALOG_KINDS for kind, _ in ops) else "0"]
        for (kind, name), row in ops.items():
            if row is None:
                args += ["d", kind, name, "", ""]
            else:
                args += ["p", kind, name, row[0] or "", row[1]]
        delay = 0.002
        while True:
            result = self._apply(keys=[self._lock_key, self.prefix], args=args)
            if result != -1:
                return int(result)
            time.sleep(delay)  # another writer's transaction holds the store: wait for its commit
            delay = min(0.05, delay * 2)

    def _pending(self) -> dict | None:
        return getattr(self._local, "pending", None)

    # ---- records ------------------------------------------------------------------------
    def put(self, kind: str, name: str, parent: str | None, body: dict) -> None:
        row = (parent, orjson.dumps(body))
        pending = self._pending()
        if pending is not None:
            pending[(kind, name)] = row
        else:
            self._write({(kind, name): row}, "")

    def get(self, kind: str, name: str) -> dict | None:
        pending = self._pending()
        if pending is not None and (kind, name) in pending:
            row = pending[(kind, name)]
            return None if row is None else orjson.loads(row[1])
        body = self._redis.hget(f"{self.prefix}:body:{kind}", name)
        return None if body is None else orjson.loads(body)

    def list(self, kind: str, parent: str | None = None) -> list[dict]:
        if parent is None:
            rows = {k.decode(): v for k, v in self._redis.hgetall(f"{self.prefix}:body:{kind}").items()}
        else:
            names = sorted(n.decode() for n in self._redis.smembers(f"{self.prefix}:children:{kind}:{parent}"))
            bodies = self._redis.hmget(f"{self.prefix}:body:{kind}", names) if names else []
            rows = {n: b for n, b in zip(names, bodies, strict=True) if b is not None}
        for (k, n), row in (self._pending() or {}).items():
            if k != kind:
                continue
            if row is None or (parent is not None and row[0] != parent):
                rows.pop(n, None)
            else:
                rows[n] = row[1]
        return [orjson.loads(rows[n]) for n in sorted(rows)]

    def delete(self, kind: str, name: str) -> bool:
        pending = self._pending()
        if pending is not None:
            existed = self.get(kind, name) is not None
            pending[(kind, name)] = None
            return existed
        return self._write({(kind, name): None}, "") > 0

    def generation(self) -> int:
        """Changes whenever any writer (any frontend) writes: readers refresh their caches on it."""
        return int(self._redis.get(f"{self.prefix}:generation") or 0)

    # ---- leases -------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        got = self._acquire(keys=[f"{self.prefix}:lease:{name}", f"{self.prefix}:fence:{name}"],
                            args=[holder, ttl_ms])  # fmt: skip
        if got is None:
            return None
        return Lease(holder, int(got[0]), _now_ms() + int(got[1]))

    def lease(self, name: str) -> Lease | None:
        raw = self._redis.get(f"{self.prefix}:lease:{name}")
        if raw is None:
            return None
        holder, _, token = raw.decode().rpartition("|")
        ttl = self._redis.pttl(f"{self.prefix}:lease:{name}")
        return Lease(holder, int(token), _now_ms() + max(0, ttl))

    def release_lease(self, name: str, holder: str) -> bool:
        return bool(self._release(keys=[f"{self.prefix}:lease:{name}"], args=[holder]))

    # ---- artifacts ----------------------------------------------------------------------
    def put_blob(self, key: str, data: bytes) -> None:
        self._redis.set(f"{self.prefix}:blob:{key}", data, nx=True)

    def get_blob(self, key: str) -> bytes | None:
        return self._redis.get(f"{self.prefix}:blob:{key}")

    def close(self) -> None:
        self._redis.close()


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
            return RedisStore(url)
        except redis.RedisError as exc:
            from infaas.errors import Unavailable

            raise Unavailable(f"cannot reach the Redis store at {url}: {exc}") from None
    from infaas.errors import InvalidInput

    raise InvalidInput(f"unknown store {url!r}: 'sqlite' or redis://host:port/db")
