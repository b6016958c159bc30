"""The decision logs (control decisions kept apart from sampled per-query selections, each with its
reason) and the set of background tasks that run beside the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("infaas.decisions")


# What the control side decides: kept in a log of their own, which query traffic cannot push out.
CONTROL_KINDS = (
    "load",
    "unload",
    "replicate",
    "grow",
    "shrink",
    "upgrade",
    "downgrade",
    "add_worker",
    "remove_worker",
    "blocked",
    "reconcile",
    "job",
    "error",
    "profile",
    "register",
    "remove",
    "leader",
)
SELECT = "select"  # a model-less query's choice of variant: sampled
KINDS = (*CONTROL_KINDS, SELECT)


class DecisionLog:
    """Every decision with its reason, in two bounded logs: control decisions (loads, scaling,
    jobs, errors...) in one that per-query selections cannot push out, and selections sampled: the
    first of each (scope, variant) per second is kept, and counts (``similar``) the like ones after
    it in that second that were not. ``log_decision`` is what every part is handed.

    With several frontends on one store, each publishes its control decisions there
    (:meth:`publish`, called once a second by the server) and :meth:`query` merges those of the
    others (``remote``): the leader's scaling decisions are readable from any frontend."""

    def __init__(
        self,
        size: int,
        frontend: str = "",
        publish: Callable[[str, list[dict]], None] | None = None,
        remote: Callable[[], list[tuple[str, list[dict]]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control: deque[dict[str, Any]] = deque(maxlen=size)
        self.selections: deque[dict[str, Any]] = deque(maxlen=size)
        self.not_kept = 0  # selections sampled out, in all
        self.counts: Counter[str] = Counter()  # every decision logged, kept or not, by kind
        self.frontend = frontend
        self._publish, self._remote = publish, remote
        self._second = -1
        self._kept: dict[tuple, dict] = {}  # (scope, variant) -> the selection kept this second
        self._dirty = False
        self._clock = clock  # wall time: each entry's ``time``, and the second selections are sampled in

    def log_decision(self, kind: str, reason: str, **fields: Any) -> dict:
        now = self._clock()
        self.counts[kind] += 1
        if kind == SELECT:
            second = int(now)
            if second != self._second:
                self._second, self._kept = second, {}
            key = (fields.get("scope"), fields.get("variant"))
            kept = self._kept.get(key)
            if kept is not None:
                kept["similar"] += 1
                self.not_kept += 1
                return kept
            entry = self._kept[key] = {"time": now, "kind": kind, "reason": reason, **fields, "similar": 0}
            self.selections.append(entry)
            return entry
        entry = {"time": now, "kind": kind, "reason": reason, **fields}
        if self.frontend:
            entry["frontend"] = self.frontend
        self.control.append(entry)
        self._dirty = True
        return entry

    async def publish(self) -> None:
        """This frontend's control decisions to the shared store, when any came since the last time.
        The store's I/O runs in a thread (a remote Redis or a busy SQLite file must not stall the
        event loop that serves requests); the snapshot is taken on the loop, where decisions are
        appended. When the store fails they stay unpublished, and the next call tries again."""
        if self._publish is None or not self._dirty:
            return
        self._dirty = False
        try:
            await asyncio.to_thread(self._publish, self.frontend, list(self.control))
        except BaseException:
            self._dirty = True
            raise

    def query(self, kinds: Collection[str] | None = None, since: float | None = None, limit: int = 100) -> list[dict]:
        """The newest ``limit`` decisions of ``kinds`` (all if None) at or after ``since``, oldest
        first: this frontend's, and the other frontends' control decisions from the store."""
        sources: list[Iterable[dict]] = []
        if kinds is None or any(k != SELECT for k in kinds):
            sources.append(self.control)
            sources += [entries for who, entries in self._others() if who != self.frontend]
        if kinds is None or SELECT in kinds:
            sources.append(self.selections)
        picked = [
            d
            for source in sources
            for d in source
            if (kinds is None or d["kind"] in kinds) and (since is None or d["time"] >= since)
        ]
        picked.sort(key=lambda d: d["time"])
        return picked[-limit:]

    def _others(self) -> list[tuple[str, list[dict]]]:
        if self._remote is None:
            return []
        try:
            return self._remote()
        except Exception as exc:  # the store unreachable: this frontend's own decisions still answer
            log.warning("could not read other frontends' decisions from the store: %s", exc)
            return []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(sorted([*self.control, *self.selections], key=lambda d: d["time"]))

    def __len__(self) -> int:
        return len(self.control) + len(self.selections)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        return self.query(limit=limit)


class Background:
    """Coroutines run beside the request path: failures are logged (and go to the decision log),
    never raised into a query; ``cancel`` ends them all at shutdown."""

    def __init__(self, decisions: DecisionLog) -> None:
        self.decisions = decisions
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, guarded: bool = True) -> asyncio.Task:
        """Start ``coro``; ``guarded``: an exception is logged rather than left on the task."""

        async def run() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("background work failed: %s", exc)
                self.decisions.log_decision("error", f"background work failed: {exc}")

        task = asyncio.create_task(run() if guarded else coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """A point in time as a Unix time (``1733356800.5``), ISO 8601 (``2026-12-05T01:30:00Z``; no
    zone: UTC) or a span back from now (``90s``, ``10m``, ``2h``, ``1d``); ValueError says which
    forms are accepted."""
    raw = text.strip()
    if raw and raw[-1] in _UNITS and raw[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(raw[:-1]) * _UNITS[raw[-1]]
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"since {text!r} is not a Unix time, an ISO 8601 time (2026-12-05T01:30:00Z) or a span back (10m, 2h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_kinds(text: str) -> tuple[str, ...]:
    """``load,add_worker``: each a known kind, or ValueError naming the unknown one and the known."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kind {','.join(unknown) or text!r} is not one of: {', '.join(KINDS)}")
    return kinds
