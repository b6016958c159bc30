"""One controller among several frontends: a lease in the shared store, renewed, with a fencing token.

Every frontend runs a :class:`Leadership`. The one that holds the lease runs the controller and the job
runner; the others serve queries only. The holder renews every third of the lease's life; a frontend
that dies stops renewing and another takes the lease within one lease time (a new, larger fencing
token). The holder checks ``holds()`` before every action (it stops acting a safety margin before its
lease could have expired), and the token travels with the controller's actions to the workers, which
refuse a token older than one they have seen: a paused old leader cannot undo the new one's work.

Each frontend also keeps a heartbeat record (kind ``frontend``) in the store: who is serving, where,
and who leads (``GET /api/v1/frontends``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("infaas.leader")

LEASE = "controller"


def frontend_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Leadership:
    def __init__(
        self,
        store: Any,
        holder: str,
        *,
        ttl_s: float = 5.0,
        url: str = "",
        on_gain: Callable[[], Awaitable[None]] | None = None,
        on_lose: Callable[[], Awaitable[None]] | None = None,
        log_decision: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.url = url
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.log_decision = log_decision or (lambda *a, **k: None)
        self.token: int | None = None
        self.since: float | None = None
        self._valid_until = 0.0  # monotonic: the lease is ours until at least then
        self._task: asyncio.Task | None = None
        self.changes = 0

    @property
    def leader(self) -> bool:
        return self.token is not None

    def holds(self) -> bool:
        """Whether this frontend may act now: it holds the lease with a margin before it could expire."""
        return self.token is not None and time.monotonic() < self._valid_until

    def fence(self) -> int | None:
        return self.token if self.holds() else None

    async def start(self) -> None:
        await self.step()  # the first frontend leads from its first second
        self._task = asyncio.create_task(self._run(), name="infaas-leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        leader = self.leader
        if leader:
            await self._lose("this frontend is stopping")
        try:
            if leader:
                await asyncio.to_thread(self.store.release_lease, LEASE, self.holder)
            await asyncio.to_thread(self.store.delete, "frontend", self.holder)
        except Exception as exc:  # the store is gone: the lease and this frontend's record expire by themselves
            log.warning(
                "shutdown: could not release the controller lease (%s); it expires within %g s",
                type(exc).__name__,
                self.ttl_s,
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is unreachable: we cannot know we still lead, so stop acting
                log.warning("lease renewal failed: %s", exc)
                if self.leader and time.monotonic() >= self._valid_until:
                    await self._lose(f"lease not renewed ({type(exc).__name__}: {exc})")

    async def step(self) -> None:
        asked = time.monotonic()
        lease = await asyncio.to_thread(self.store.acquire_lease, LEASE, self.holder, int(self.ttl_s * 1000))
        if lease is not None:
            self._valid_until = asked + self.ttl_s * 0.8  # counted from before the request: never late
            if self.token != lease.token:
                previous = self.token
                self.token, self.since = lease.token, time.time()
                self.changes += 1
                self.log_decision(
                    "leader",
                    f"this frontend ({self.holder}) holds the controller lease "
                    f"(fencing token {lease.token}{'' if previous is None else f', was {previous}'}); "
                    "it runs the controller and the job runner",
                )
                if self.on_gain is not None:
                    await self.on_gain()
        elif self.leader:
            await self._lose("another frontend holds the controller lease")
        await asyncio.to_thread(
            self.store.put,
            "frontend",
            self.holder,
            None,
            {
                "id": self.holder,
                "url": self.url,
                "leader": self.leader,
                "token": self.token,
                "expires": time.time() + self.ttl_s,
                "pid": os.getpid(),
                "host": socket.gethostname(),
            },
        )

    async def _lose(self, why: str) -> None:
        token, self.token = self.token, None
        self.changes += 1
        self.log_decision(
            "leader", f"this frontend ({self.holder}) no longer runs the controller: {why} (its token was {token})"
        )
        if self.on_lose is not None:
            await self.on_lose()

    def report(self) -> dict:
        holder = self.store.lease(LEASE)
        now = time.time()
        return {
            "frontend": self.holder,
            "leader": self.leader,
            "token": self.token,
            "lease": None if holder is None else {"holder": holder.holder, "token": holder.token},
            "frontends": [f for f in self.store.list("frontend") if f.get("expires", 0) > now],
        }
