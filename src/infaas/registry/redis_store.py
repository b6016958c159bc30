"""The metadata store in Redis (:class:`RedisStore`), for several frontends sharing one registry
and live state; it passes the same contract suite as the memory and SQLite stores."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import orjson

from infaas.registry.store import CATALOG_KINDS, Lease, now_ms

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

    def __init__(self, url: str, prefix: str = "infaas", lock_ttl_s: float = 30.0, lock_wait_s: float = 30.0) -> None:
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

                raise Unavailable(
                    f"the Redis store stayed locked for {self.lock_wait_s:g} s "
                    "(a writer holding it died, or is slow; it expires on its own)"
                )
            time.sleep(delay)
            delay = min(0.05, delay * 2)
        self._local.token, self._local.pending = token, {}
        try:
            yield
            pending = self._local.pending
            if pending and self._write(pending, token) == -2:
                raise RuntimeError(
                    f"Redis store transaction outlived its lock ({self.lock_ttl_ms} ms): nothing was written"
                )
        finally:
            self._local.token, self._local.pending = None, None
            self._release_lock(token)

    def _release_lock(self, token: str) -> None:
        self._redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            1,
            self._lock_key,
            token,
        )

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
        got = self._acquire(keys=[f"{self.prefix}:lease:{name}", f"{self.prefix}:fence:{name}"], args=[holder, ttl_ms])
        if got is None:
            return None
        return Lease(holder, int(got[0]), now_ms() + int(got[1]))

    def lease(self, name: str) -> Lease | None:
        raw = self._redis.get(f"{self.prefix}:lease:{name}")
        if raw is None:
            return None
        holder, _, token = raw.decode().rpartition("|")
        ttl = self._redis.pttl(f"{self.prefix}:lease:{name}")
        return Lease(holder, int(token), now_ms() + max(0, ttl))

    def release_lease(self, name: str, holder: str) -> bool:
        return bool(self._release(keys=[f"{self.prefix}:lease:{name}"], args=[holder]))

    # ---- artifacts ----------------------------------------------------------------------
    def put_blob(self, key: str, data: bytes) -> None:
        self._redis.set(f"{self.prefix}:blob:{key}", data, nx=True)

    def get_blob(self, key: str) -> bytes | None:
        return self._redis.get(f"{self.prefix}:blob:{key}")

    def close(self) -> None:
        self._redis.close()
