"""Local cluster: workers are subprocesses of the server, pinned to disjoint core sets."""

from __future__ import annotations

import asyncio
import itertools
import os

from infaas.cluster.handle import ManagedWorker
from infaas.cluster.local_worker import local_worker
from infaas.errors import Unavailable
from infaas.hardware import local_kind


def core_sets(workers: int, cores_per_worker: int = 0) -> list[tuple[int, ...]]:
    """Disjoint core sets when the machine has enough cores; wrap around (shared) otherwise."""
    available = sorted(os.sched_getaffinity(0))
    per = cores_per_worker or max(1, len(available) // workers)
    return [tuple(available[(i * per + j) % len(available)] for j in range(per)) for i in range(workers)]


def measuring_worker(name: str) -> ManagedWorker:
    """A worker process for one measurement: every core this process may use, never restarted (a crash
    fails that measurement only), not one of the pool's workers."""
    return local_worker(name, tuple(sorted(os.sched_getaffinity(0))), restart=False, kind=local_kind())


class LocalCluster:
    """The default backend: local worker processes, added and removed by the controller.

    Workers started later get cores no other worker holds; when none are free, none is added.
    """

    def __init__(
        self,
        workers: int = 1,
        cores_per_worker: int = 0,
        *,
        allow_spinning: bool = False,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        sets = core_sets(workers, cores_per_worker)
        self.cores_per_worker = len(sets[0])
        self.kind = local_kind()  # every local worker runs on this machine's kind
        self.initial = workers
        self._names = itertools.count(workers)
        self._workers = [self._make(f"w{i}", cores) for i, cores in enumerate(sets)]

    def _make(self, name: str, cores: tuple[int, ...]) -> ManagedWorker:
        return local_worker(
            name, cores, allow_spinning=self.allow_spinning, start_timeout_s=self.start_timeout_s, kind=self.kind
        )

    @property
    def workers(self) -> list[ManagedWorker]:
        return self._workers

    @property
    def worker_limit(self) -> int:
        """No ceiling of its own: the controller counts how many workers this machine's cores hold."""
        return 0

    def free_cores(self) -> list[int]:
        used = {c for w in self._workers for c in w.cores}
        return [c for c in sorted(os.sched_getaffinity(0)) if c not in used]

    def can_add(self) -> str | None:
        """Why no worker can be added now (None: one can)."""
        free = self.free_cores()
        if len(free) < self.cores_per_worker:
            return f"{len(free)} free core(s), a worker needs {self.cores_per_worker}"
        return None

    async def add_worker(self) -> ManagedWorker:
        if (why := self.can_add()) is not None:
            raise Unavailable(f"cannot add a worker: {why}")
        worker = self._make(f"w{next(self._names)}", tuple(self.free_cores()[: self.cores_per_worker]))
        await worker.start()
        self._workers = [*self._workers, worker]  # a new list: iterations in flight keep theirs
        return worker

    async def remove_worker(self, name: str, only_if_empty: bool = False) -> bool:
        """Stop and forget a worker; with ``only_if_empty``, only one that hosts and is assigned
        nothing and has nothing in flight (checked here, at the moment of removal)."""
        worker = next((w for w in self._workers if w.name == name), None)
        if worker is None or (only_if_empty and not worker.empty()):
            return False
        self._workers = [w for w in self._workers if w is not worker]
        await worker.stop()
        return True

    def measuring_worker(self, name: str) -> ManagedWorker:
        return measuring_worker(name)

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self._workers))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
