"""A local worker: a subprocess of the server pinned to its cores, behind the worker handle."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from infaas.cluster.base import LoadSpec, ReplicaState, WorkerResult, WorkerState
from infaas.errors import InfaasError, Unavailable, WorkerCrashed
from infaas.hardware import HardwareKind
from infaas.protocol.worker_wire import PickleFrames, error_from_reply

log = logging.getLogger("infaas.cluster")

_DRAIN_ABOVE = 4 * 2**20
_SOCKET_BUFFER = 4 * 2**20


class LocalWorker:
    """A worker process on this machine, restarted (with its variants) if it dies.

    It owns the worker's lifecycle (:class:`WorkerState`) and each replica's
    (:class:`ReplicaState`); every transition goes through ``_set_state`` / ``_set_replica``
    (logged, and bumping ``placement_version``). ``_specs`` is the target placement: what this
    worker should host, kept across restarts. Loads and unloads of one variant are serialized,
    so an unload draining while a load of the same variant arrives cannot leave them disagreeing.
    """

    def __init__(
        self,
        name: str,
        cores: tuple[int, ...],
        *,
        allow_spinning: bool = False,
        start_timeout_s: float = 30.0,
        restart: bool = True,
        kind: HardwareKind | None = None,
    ) -> None:
        self.name = name
        self.cores = cores
        self.kind = kind
        self.node = "local"
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        self.restart = restart
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit: str = ""
        self.state = WorkerState.STOPPED
        self.replicas: dict[str, ReplicaState] = {}
        self._ready: set[str] = set()  # replicas in READY (what routing sees)
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._restart_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._inflight: dict[int, tuple[str, int]] = {}  # infer id -> (variant, rows), until the worker answers
        self._ids = itertools.count(1)
        self._outstanding: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()
        self._specs: dict[str, LoadSpec] = {}  # what this worker should host (survives restarts)
        self._locks: dict[str, asyncio.Lock] = {}
        self.placement_version = 0  # bumped whenever what is routable changes
        self._restart_times: list[float] = []
        self._frames: Any = PickleFrames()  # the channel's codec (a Ray actor's network wire differs)

    # ---- state -------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.state is WorkerState.READY

    @property
    def loaded(self) -> dict[str, LoadSpec]:
        return {v: self._specs[v] for v in self._ready if v in self._specs} if self.alive else {}

    def loaded_names(self) -> set[str] | frozenset[str]:
        """Names of the READY replicas (no copy: do not modify)."""
        return self._ready if self.alive else frozenset()

    def hosts(self, variant: str) -> bool:
        return variant in self._ready and self.alive

    def forget(self, variant: str) -> None:
        """The worker answered that it does not host ``variant``: this handle's view was stale (a
        follower's mirror older than the leader's unload). Stop routing it here; what should be here
        (the target placement) is reloaded by the controller, what should not be comes back with the
        next mirror of the actor's placement."""
        if variant in self._ready:
            self._set_replica(variant, None)

    def assigned(self, variant: str) -> bool:
        return variant in self._specs or variant in self.replicas

    def empty(self) -> bool:
        return not self._specs and not self.replicas and not self._pending

    def missing(self) -> list[LoadSpec]:
        """The target placement's variants that have no replica here (a reload that failed)."""
        return [spec for name, spec in self._specs.items() if name not in self.replicas] if self.alive else []

    def outstanding(self, variant: str | None = None) -> int:
        return self._outstanding[variant] if variant else sum(self._outstanding.values())

    def rows_in_flight(self, variant: str) -> int:
        return self._rows[variant]

    def _set_state(self, state: WorkerState, why: str = "") -> None:
        if state is not self.state:
            log.info("worker %s: %s -> %s%s", self.name, self.state.value, state.value, f" ({why})" if why else "")
            self.state = state
            self.placement_version += 1

    def _set_replica(self, variant: str, state: ReplicaState | None) -> None:
        old = self.replicas.get(variant)
        if state is None:
            self.replicas.pop(variant, None)
        else:
            self.replicas[variant] = state
        if state is ReplicaState.READY:
            self._ready.add(variant)
        else:
            self._ready.discard(variant)
        log.debug("worker %s: %s %s -> %s", self.name, variant, old and old.value, state and state.value)
        self.placement_version += 1

    def _lock(self, variant: str) -> asyncio.Lock:
        lock = self._locks.get(variant)
        if lock is None:
            lock = self._locks[variant] = asyncio.Lock()
        return lock

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._set_state(WorkerState.STARTING)
        try:
            await self._spawn()
        except BaseException:
            self._set_state(WorkerState.STOPPED, "did not start")
            raise
        self._set_state(WorkerState.READY, f"pid {self.pid}, cores {list(self.cores)}")

    async def _spawn(self) -> None:
        """Start a process and connect to it (no variants yet); kills it if the handshake fails."""
        parent, child = socket.socketpair()
        for sock in (parent, child):  # whole tensors fit in the buffers: fewer partial writes and wake-ups
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        cmd = [
            sys.executable,
            "-m",
            "infaas.worker",
            "--fd",
            str(child.fileno()),
            "--cores",
            ",".join(map(str, self.cores)),
        ]
        if self.allow_spinning:
            cmd.append("--allow-spinning")
        proc = self._proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self.pid = proc.pid
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            hello = await asyncio.wait_for(self._frames.read(reader), self.start_timeout_s)
            if not hello.get("ok"):
                raise Unavailable(f"worker {self.name} did not start: {hello}")
        except BaseException as exc:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            parent.close()
            if isinstance(exc, Unavailable | asyncio.CancelledError):
                raise
            raise Unavailable(f"worker {self.name} did not start: {exc!r}") from exc
        self._writer = writer
        self.replicas, self._ready = {}, set()
        self._reader_task = asyncio.create_task(self._read_loop(reader, proc))

    async def stop(self) -> None:
        self._set_state(WorkerState.STOPPING)
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._frames.write(self._writer, {"op": "shutdown"})
                await self._writer.drain()
                self._writer.close()
        await self._close_process(grace_s=5.0)
        self._fail_pending(Unavailable(f"worker {self.name} stopped"))
        self._set_state(WorkerState.STOPPED)

    async def _close_process(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the process to exit, kill it past that, stop reading from it."""
        if self._proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._proc.wait), grace_s)
            except TimeoutError:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._writer = None
        self.replicas, self._ready = {}, set()

    async def _dispatch_replies(self, reader: asyncio.StreamReader) -> None:
        """Hand each reply to the call waiting for it (rows in flight released first); returns only
        by raising (EOF, a broken connection, a corrupt frame)."""
        while True:
            msg = await self._frames.read(reader)
            rid = msg["id"]
            if rid in self._inflight:
                self._release(rid)
            fut = self._pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _read_loop(self, reader: asyncio.StreamReader, proc: subprocess.Popen) -> None:
        why = ""
        try:
            await self._dispatch_replies(reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a corrupt frame or a bug here: the worker cannot be trusted, replace it
            why = f"unreadable reply ({type(exc).__name__}: {exc})"
            log.exception("worker %s: %s; killing it", self.name, why)
            proc.kill()
        if self._proc is not proc or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return
        self._writer = None
        self.replicas, self._ready = {}, set()
        code = await asyncio.to_thread(proc.wait)
        self.last_exit = why or (f"exit code {code}" if code >= 0 else f"signal {-code}")
        log.error("worker %s (pid %s) died: %s", self.name, proc.pid, self.last_exit)
        self._set_state(WorkerState.RESTARTING if self.restart else WorkerState.STOPPED, self.last_exit)
        self._fail_pending(
            WorkerCrashed(
                f"worker {self.name} (pid {proc.pid}) died ({self.last_exit}) while serving this "
                "request; it is being restarted"
            )
        )
        if self.restart and (self._restart_task is None or self._restart_task.done()):
            self._restart_task = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        """One restart at a time: spawn, reload the target placement, then route again. A failed
        attempt kills what it started and tries again with backoff."""
        while self.state is WorkerState.RESTARTING:
            now = time.monotonic()
            self._restart_times = [t for t in self._restart_times if now - t < 60] + [now]
            if len(self._restart_times) > 3:
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (len(self._restart_times) - 3)))
            if self.state is not WorkerState.RESTARTING:
                return
            try:
                await self._spawn()
                self.restarts += 1  # counted before its variants are routable again (observers poll hosts())
                failed = []
                for spec in list(self._specs.values()):
                    try:
                        await self._load_replica(spec)
                    except WorkerCrashed:
                        raise  # the new process died too: start again
                    except InfaasError as exc:  # this variant stays missing; the controller retries it
                        failed.append(spec.variant)
                        log.error("worker %s: reload of %s failed: %s", self.name, spec.variant, exc.message)
                self._set_state(
                    WorkerState.READY,
                    f"restarted with {len(self._specs) - len(failed)} variant(s)"
                    + (f", {len(failed)} failed to reload ({', '.join(failed)})" if failed else ""),
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("restart of worker %s failed; retrying", self.name)
                await self._close_process(grace_s=0.0)

    def _release(self, rid: int) -> None:
        variant, rows = self._inflight.pop(rid)
        self._outstanding[variant] -= 1
        self._rows[variant] -= rows

    def _fail_pending(self, exc: Exception) -> None:
        for rid in list(self._inflight):
            self._release(rid)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # ---- calls ---------------------------------------------------------------------------
    def _send(self, message: dict) -> tuple[int, asyncio.Future]:
        if self._writer is None or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            raise Unavailable(f"worker {self.name} is not running ({self.last_exit or self.state.value})")
        fut = asyncio.get_running_loop().create_future()
        rid = next(self._ids)
        message["id"] = rid
        self._pending[rid] = fut
        self._frames.write(self._writer, message)
        return rid, fut

    async def _drain(self) -> None:
        if self._writer is not None and self._writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
            await self._writer.drain()

    async def _call(self, message: dict, timeout: float = 60.0) -> Any:
        _, fut = self._send(message)
        await self._drain()
        reply = await asyncio.wait_for(fut, timeout)
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        return reply["result"]

    async def load(self, spec: LoadSpec, keep_target: bool = False) -> dict[str, Any]:
        """Add the variant to the target placement and load it. If the load fails it leaves the
        target again, unless ``keep_target`` (a reconcile: it stays missing, to be retried)."""
        self._specs[spec.variant] = spec
        try:
            result = await self._load_replica(spec)
        except BaseException:
            if not keep_target and self._specs.get(spec.variant) is spec:
                self._specs.pop(spec.variant, None)
            raise
        return result or {"load_time_s": 0.0, "already": True}

    async def _load_replica(self, spec: LoadSpec) -> dict[str, Any] | None:
        """Load ``spec`` in the current process unless it is there already (None) or left the target."""
        async with self._lock(spec.variant):
            if self._specs.get(spec.variant) is not spec or self.replicas.get(spec.variant) is ReplicaState.READY:
                return None
            self._set_replica(spec.variant, ReplicaState.LOADING)
            try:
                result = await self._call({"op": "load", **_spec_msg(spec)}, timeout=600)
            except BaseException:
                self._set_replica(spec.variant, None)
                raise
            self._set_replica(spec.variant, ReplicaState.READY)
            return result

    async def unload(self, variant: str, drain_s: float = 30.0) -> None:
        """Leave the target placement, stop routing, let the requests already sent finish, then unload."""
        async with self._lock(variant):
            self._specs.pop(variant, None)
            if variant not in self.replicas:
                return
            self._set_replica(variant, ReplicaState.DRAINING)
            try:
                await self._drain_and_unload(variant, drain_s)
            finally:
                self._set_replica(variant, None)

    async def _drain_and_unload(self, variant: str, drain_s: float) -> None:
        """Wait (up to ``drain_s``) for this frontend's requests to the variant, then unload it."""
        until = time.monotonic() + drain_s
        while self._outstanding[variant] and time.monotonic() < until and self._writer is not None:
            await asyncio.sleep(0.01)
        self._set_replica(variant, ReplicaState.UNLOADING)
        if self._writer is not None:
            await self._call({"op": "unload", "variant": variant})

    async def stats(self) -> dict[str, Any]:
        return await self._call({"op": "stats"}, timeout=10)

    async def infer(
        self,
        variant: str,
        inputs: dict[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        drop_late: bool = True,
        offline: bool = False,
    ) -> WorkerResult:
        """Send a request and wait for its reply. Rows count as in flight until the worker answers,
        even when the caller gives up: a cancelled caller sends ``cancel`` (the worker drops the
        request if it is still queued), and the frontend's view stays the worker's."""
        rid, fut = self._send(
            {
                "op": "infer",
                "variant": variant,
                "inputs": inputs,
                "rows": rows,
                "arrival": time.monotonic(),
                "deadline": deadline,
                "drop_late": drop_late,
                "offline": offline,
            }
        )
        self._inflight[rid] = (variant, rows)  # released when the worker answers (or dies), not before
        self._outstanding[variant] += 1
        self._rows[variant] += rows
        try:
            await self._drain()
            reply = await fut
        except asyncio.CancelledError:
            fut.cancel()  # the reply, when it comes, goes nowhere
            if rid in self._inflight and self._writer is not None:  # still queued or running there
                with contextlib.suppress(Exception):
                    self._frames.write(self._writer, {"op": "cancel", "variant": variant, "key": rid, "id": 0})
            raise
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        return WorkerResult(
            reply["outputs"], reply["queue_ns"], reply["compute_ns"], reply["batch_size"], reply["batch_pos"]
        )

    async def profile(self, request: dict, timeout: float = 600) -> dict[str, Any]:
        """Run the worker's ``profile`` op (see ``infaas.profiler``)."""
        return await self._call({"op": "profile", **request}, timeout=timeout)

    def kill(self) -> None:
        """Kill the process (tests and fault drills); the handle restarts it."""
        if self._proc is not None:
            self._proc.kill()


def _spec_msg(spec: LoadSpec) -> dict:
    return {
        "variant": spec.variant,
        "path": spec.path,
        "threads": spec.threads,
        "max_batch": spec.max_batch,
        "provider": spec.provider,
        "max_delay_s": spec.max_delay_s,
        "instances": spec.instances,
        "latency_ms": (spec.latency_slope_ms, spec.latency_intercept_ms),
        "max_queue_s": spec.max_queue_s,
        "max_queue_bytes": spec.max_queue_bytes,
        "admission": spec.admission,
        "sha256": spec.sha256,
        "batch_ms": dict(spec.batch_ms),
    }
