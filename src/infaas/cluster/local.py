"""Local cluster: workers are subprocesses of the server, pinned to disjoint core sets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from infaas.cluster.base import LoadSpec, WorkerResult, error_from_reply
from infaas.errors import Unavailable, WorkerCrashed
from infaas.worker.wire import read_message, write_message

log = logging.getLogger("infaas.cluster")

_DRAIN_ABOVE = 4 * 2**20
_SOCKET_BUFFER = 4 * 2**20


class LocalWorker:
    """A worker process on this machine, restarted (with its variants) if it dies."""

    def __init__(
        self, name: str, cores: tuple[int, ...], *, allow_spinning: bool = False,
        start_timeout_s: float = 30.0, restart: bool = True,
    ) -> None:
        self.name = name
        self.cores = cores
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        self.restart = restart
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit: str = ""
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._outstanding: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()
        self._specs: dict[str, LoadSpec] = {}  # what this worker should host (survives restarts)
        self._loaded: set[str] = set()  # what the current process has loaded
        self.placement_version = 0  # bumped whenever what is loaded (or alive) changes
        self._alive = False
        self._stopping = False
        self._restart_times: list[float] = []

    # ---- state -------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def loaded(self) -> dict[str, LoadSpec]:
        return {v: self._specs[v] for v in self._loaded if v in self._specs} if self._alive else {}

    def loaded_names(self) -> set[str] | frozenset[str]:
        """Names of the variants the current process has loaded (no copy: do not modify)."""
        return self._loaded if self._alive else frozenset()

    def hosts(self, variant: str) -> bool:
        return self._alive and variant in self._loaded

    def outstanding(self, variant: str | None = None) -> int:
        return self._outstanding[variant] if variant else sum(self._outstanding.values())

    def rows_in_flight(self, variant: str) -> int:
        return self._rows[variant]

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        parent, child = socket.socketpair()
        for sock in (parent, child):  # whole tensors fit in the buffers: fewer partial writes and wake-ups
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        cmd = [sys.executable, "-m", "infaas.worker", "--fd", str(child.fileno()),
               "--cores", ",".join(map(str, self.cores))]  # fmt: skip
        if self.allow_spinning:
            cmd.append("--allow-spinning")
        self._proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self.pid = self._proc.pid
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        try:
            hello = await asyncio.wait_for(read_message(reader), self.start_timeout_s)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            self._proc.kill()
            raise Unavailable(f"worker {self.name} did not start: {exc!r}") from exc
        if not hello.get("ok"):
            raise Unavailable(f"worker {self.name} did not start: {hello}")
        self._writer = writer
        self._loaded = set()
        self._alive = True
        self.placement_version += 1
        self._reader_task = asyncio.create_task(self._read_loop(reader, self._proc))
        log.info("worker %s started (pid %s, cores %s)", self.name, self.pid, self.cores)

    async def stop(self) -> None:
        self._stopping = True
        self._alive = False
        if self._writer is not None:
            with contextlib.suppress(Exception):
                write_message(self._writer, {"op": "shutdown"})
                await self._writer.drain()
                self._writer.close()
        if self._proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._proc.wait), 5)
            except TimeoutError:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._fail_pending(Unavailable(f"worker {self.name} stopped"))

    async def _read_loop(self, reader: asyncio.StreamReader, proc: subprocess.Popen) -> None:
        try:
            while True:
                msg = await read_message(reader)
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        self._alive = False
        self.placement_version += 1
        if self._stopping:
            return
        code = await asyncio.to_thread(proc.wait)
        self.last_exit = f"exit code {code}" if code >= 0 else f"signal {-code}"
        log.error("worker %s (pid %s) died: %s", self.name, proc.pid, self.last_exit)
        self._fail_pending(WorkerCrashed(
            f"worker {self.name} (pid {proc.pid}) died ({self.last_exit}) while serving this "
            "request; it is being restarted"))  # fmt: skip
        if self.restart:
            asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        now = time.monotonic()
        self._restart_times = [t for t in self._restart_times if now - t < 60] + [now]
        backoff = min(30.0, 0.5 * 2 ** max(0, len(self._restart_times) - 3))
        await asyncio.sleep(backoff if len(self._restart_times) > 3 else 0)
        if self._stopping:
            return
        specs = list(self._specs.values())
        try:
            await self.start()
            self.restarts += 1  # counted before its variants are routable again (observers poll hosts())
            for spec in specs:
                await self._call({"op": "load", **_spec_msg(spec)}, timeout=600)
                self._loaded.add(spec.variant)
                self.placement_version += 1
            log.info("worker %s restarted with %d variants", self.name, len(specs))
        except Exception:
            log.exception("restart of worker %s failed; retrying", self.name)
            asyncio.create_task(self._restart())

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # ---- calls ---------------------------------------------------------------------------
    async def _send(self, message: dict) -> asyncio.Future:
        if not self._alive or self._writer is None:
            raise Unavailable(f"worker {self.name} is not running ({self.last_exit or 'starting'})")
        fut = asyncio.get_running_loop().create_future()
        rid = next(self._ids)
        message["id"] = rid
        self._pending[rid] = fut
        write_message(self._writer, message)
        if self._writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
            await self._writer.drain()
        return fut

    async def _call(self, message: dict, timeout: float = 60.0) -> Any:
        fut = await self._send(message)
        reply = await asyncio.wait_for(fut, timeout)
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        return reply["result"]

    async def load(self, spec: LoadSpec) -> dict[str, Any]:
        result = await self._call({"op": "load", **_spec_msg(spec)}, timeout=600)
        self._specs[spec.variant] = spec
        self._loaded.add(spec.variant)
        self.placement_version += 1
        return result

    async def unload(self, variant: str, drain_s: float = 30.0) -> None:
        """Stop routing to the variant, let the requests already sent finish, then unload it."""
        self._specs.pop(variant, None)
        self._loaded.discard(variant)
        self.placement_version += 1
        until = time.monotonic() + drain_s
        while self._outstanding[variant] and time.monotonic() < until and self._alive:
            await asyncio.sleep(0.01)
        await self._call({"op": "unload", "variant": variant})

    async def stats(self) -> dict[str, Any]:
        return await self._call({"op": "stats"}, timeout=10)

    async def infer(
        self, variant: str, inputs: dict[str, np.ndarray], rows: int,
        deadline: float | None = None, drop_late: bool = True, offline: bool = False,
    ) -> WorkerResult:
        self._outstanding[variant] += 1
        self._rows[variant] += rows
        try:
            fut = await self._send({
                "op": "infer", "variant": variant, "inputs": inputs, "rows": rows,
                "arrival": time.monotonic(), "deadline": deadline, "drop_late": drop_late,
                "offline": offline,
            })  # fmt: skip
            reply = await fut
        finally:
            self._outstanding[variant] -= 1
            self._rows[variant] -= rows
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        return WorkerResult(reply["outputs"], reply["queue_ns"], reply["compute_ns"],
                            reply["batch_size"], reply["batch_pos"])  # fmt: skip

    async def profile(self, request: dict, timeout: float = 600) -> dict[str, Any]:
        """Run the worker's ``profile`` op (see ``infaas.profiler``)."""
        return await self._call({"op": "profile", **request}, timeout=timeout)

    def kill(self) -> None:
        """Kill the process (tests and fault drills); the handle restarts it."""
        if self._proc is not None:
            self._proc.kill()


def _spec_msg(spec: LoadSpec) -> dict:
    return {"variant": spec.variant, "path": spec.path, "threads": spec.threads,
            "max_batch": spec.max_batch, "provider": spec.provider,
            "max_delay_s": spec.max_delay_s, "instances": spec.instances,
            "latency_ms": (spec.latency_slope_ms, spec.latency_intercept_ms)}  # fmt: skip


def core_sets(workers: int, cores_per_worker: int = 0) -> list[tuple[int, ...]]:
    """Disjoint core sets when the machine has enough cores; wrap around (shared) otherwise."""
    available = sorted(os.sched_getaffinity(0))
    per = cores_per_worker or max(1, len(available) // workers)
    return [
        tuple(available[(i * per + j) % len(available)] for j in range(per)) for i in range(workers)
    ]


class LocalCluster:
    """The default backend: local worker processes, added and removed by the controller.

    Workers started later get cores no other worker holds; when none are free, none is added.
    """

    def __init__(self, workers: int = 1, cores_per_worker: int = 0, *,
                 allow_spinning: bool = False, start_timeout_s: float = 30.0) -> None:  # fmt: skip
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        sets = core_sets(workers, cores_per_worker)
        self.cores_per_worker = len(sets[0])
        self._names = itertools.count(workers)
        self._workers = [self._make(f"w{i}", cores) for i, cores in enumerate(sets)]

    def _make(self, name: str, cores: tuple[int, ...]) -> LocalWorker:
        return LocalWorker(name, cores, allow_spinning=self.allow_spinning, start_timeout_s=self.start_timeout_s)

    @property
    def workers(self) -> list[LocalWorker]:
        return self._workers

    def free_cores(self) -> list[int]:
        used = {c for w in self._workers for c in w.cores}
        return [c for c in sorted(os.sched_getaffinity(0)) if c not in used]

    def can_add(self) -> str | None:
        """Why no worker can be added now (None: one can)."""
        free = self.free_cores()
        if len(free) < self.cores_per_worker:
            return f"{len(free)} free core(s), a worker needs {self.cores_per_worker}"
        return None

    async def add_worker(self) -> LocalWorker:
        if (why := self.can_add()) is not None:
            raise Unavailable(f"cannot add a worker: {why}")
        worker = self._make(f"w{next(self._names)}", tuple(self.free_cores()[: self.cores_per_worker]))
        await worker.start()
        self._workers = [*self._workers, worker]  # a new list: iterations in flight keep theirs
        return worker

    async def remove_worker(self, name: str) -> None:
        worker = next(w for w in self._workers if w.name == name)
        self._workers = [w for w in self._workers if w is not worker]
        await worker.stop()

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self._workers))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
