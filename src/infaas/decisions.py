"""The decision log (every selection and scaling decision with its reason) and the set of
background tasks that run beside the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Iterator
from typing import Any

log = logging.getLogger("infaas.decisions")


class DecisionLog:
    """A bounded log of decisions, newest last; ``log_decision`` is what every part is handed."""

    def __init__(self, size: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def log_decision(self, kind: str, reason: str, **fields: Any) -> dict:
        entry = {"time": time.time(), "kind": kind, "reason": reason, **fields}
        self.entries.append(entry)
        return entry

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        return list(self.entries)[-limit:]


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
