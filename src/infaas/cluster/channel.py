"""How the frontend reaches one worker: the :class:`Transport` contract (a local process or a Ray actor)
and the :class:`Channel` that carries the request path of the worker's current incarnation."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from infaas.errors import Unavailable

if TYPE_CHECKING:
    from infaas.hardware import HardwareKind

_DRAIN_ABOVE = 4 * 2**20
TURNED_AWAY_S = 0.1  # how often (at most) a frontend tells a worker of the demand its selection refused


class Recovery(enum.Enum):
    """What follows a worker's death, as its transport decides."""

    RESTART = "restart"  # this handle starts a new process (or actor) and reloads the target placement
    AWAIT = "await"  # someone else replaces it (the leading frontend); this handle reattaches later
    NONE = "none"  # nothing: the handle stops (a measurement's worker, or restarts turned off)


class Transport(Protocol):
    """How one worker's incarnations are started and reached. ``open`` starts (or attaches to) one and
    returns the request stream; the transport calls ``lost(why)`` if it learns of the death by another
    way than the stream's end (a Ray actor's watch)."""

    frames: Any  # the request stream's codec: ``read(reader)``, ``write(writer, message)``
    drains_all: bool  # the worker counts every frontend's requests and drains them before an unload
    shares_memory: bool  # the worker maps this machine's shared memory (spans travel instead of tensors)
    pid: int | None
    node: str
    kind: HardwareKind | None
    cores: tuple[int, ...]

    async def open(self, lost: Callable[[str], None]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...
    async def call(self, message: dict, timeout: float, channel: Channel) -> dict: ...  # a reply dict
    async def placement(self) -> dict | None: ...  # the worker's own placement, when others may change it
    async def exit_reason(self, exc: BaseException | None) -> str: ...  # after the stream ended
    def recovery(self, why: str) -> Recovery: ...
    async def close(self, grace_s: float, kill: bool, channel: Channel) -> None: ...
    def kill(self) -> None: ...


class Channel:
    """The request stream of the current incarnation, and the calls waiting on it."""

    def __init__(self, frames: Any) -> None:
        self.frames = frames
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.inflight: dict[int, tuple[str, int]] = {}  # infer id -> (variant, rows), until the worker answers
        self.outstanding: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        # per variant with rows in flight: when its worker most likely began the batch it runs now
        # (the first send to an idle variant, else the last answer: the next batch starts as one ends)
        self.since: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._turned: dict[str, list[int]] = {}  # variant -> [requests, rows] turned away, not yet told
        self._turned_flush: asyncio.TimerHandle | None = None

    def running_ms(self, variant: str) -> float | None:
        """How long the batch of ``variant`` running there has most likely run; None when none is."""
        since = self.since.get(variant)
        return None if since is None else (time.monotonic() - since) * 1000

    @property
    def attached(self) -> bool:
        return self.writer is not None

    def detach(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.writer = None

    def send(self, message: dict, variant: str | None = None, rows: int = 0) -> tuple[int, asyncio.Future]:
        """Write ``message`` with a fresh id; the future gets the reply. With ``variant``, its rows count
        as in flight until the worker answers (or dies), even when the caller gives up."""
        if self.writer is None:
            raise Unavailable("the worker's connection is closed")
        fut = asyncio.get_running_loop().create_future()
        rid = next(self._ids)
        message["id"] = rid
        self.pending[rid] = fut
        self.frames.write(self.writer, message)
        if variant is not None:
            self.inflight[rid] = (variant, rows)
            if not self.rows[variant]:
                self.since[variant] = time.monotonic()
            self.outstanding[variant] += 1
            self.rows[variant] += rows
        return rid, fut

    async def drain(self) -> None:
        if self.writer is not None and self.writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
            await self.writer.drain()

    async def call(self, message: dict, timeout: float) -> dict:
        """Send and wait for the reply dict (``ok``, ``result`` or ``kind``/``error``)."""
        _, fut = self.send(message)
        await self.drain()
        return await asyncio.wait_for(fut, timeout)

    def cancel(self, rid: int, variant: str) -> None:
        """The caller gave up: the reply, when it comes, goes nowhere; the worker drops the request if it
        is still queued."""
        fut = self.pending.get(rid)
        if fut is not None:
            fut.cancel()
        if rid in self.inflight:
            self.notify({"op": "cancel", "variant": variant, "key": rid})

    def turned_away(self, variant: str, rows: int) -> None:
        """A request of ``rows`` the selection refused (429) because ``variant`` on this worker was too
        busy for its objective: the worker counts it as demand its replica did not carry, where the
        controller of any frontend reads it. One notice ``TURNED_AWAY_S`` after the first refusal,
        with every one until then."""
        counts = self._turned.setdefault(variant, [0, 0])
        counts[0] += 1
        counts[1] += rows
        if self._turned_flush is None:
            self._turned_flush = asyncio.get_running_loop().call_later(TURNED_AWAY_S, self._send_turned)

    def _send_turned(self) -> None:
        self._turned_flush = None
        turned, self._turned = self._turned, {}
        self.notify({"op": "turned_away", "counts": turned})

    def notify(self, message: dict) -> None:
        """A one-way message (no reply), if the stream is open; lost with the stream otherwise."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.frames.write(self.writer, {**message, "id": 0})

    async def dispatch(self, reader: asyncio.StreamReader) -> None:
        """Hand each reply to the call waiting for it (rows in flight released first); returns only by
        raising (EOF, a broken connection, a corrupt frame)."""
        while True:
            msg = await self.frames.read(reader)
            rid = msg["id"]
            if rid in self.inflight:
                self._release(rid)
            fut = self.pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _release(self, rid: int) -> None:
        variant, rows = self.inflight.pop(rid)
        self.outstanding[variant] -= 1
        self.rows[variant] -= rows
        if self.rows[variant] > 0:
            self.since[variant] = time.monotonic()
        else:
            self.since.pop(variant, None)

    def fail_all(self, exc: Exception) -> None:
        for rid in list(self.inflight):
            self._release(rid)
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
