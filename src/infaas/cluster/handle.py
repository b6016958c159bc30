"""The frontend's handle on one worker, whatever carries its messages.

Three parts, each with one job:

- :class:`ManagedWorker` owns the worker's lifecycle (:class:`WorkerState`), each replica's
  (:class:`ReplicaState`), the target placement (what it should host, kept across restarts) and the
  restart policy. It is the same class for a local process and a Ray actor.
- :class:`Channel` carries the request path: frames out, replies back to the call waiting for them,
  rows in flight counted until the worker answers.
- A :class:`Transport` is how one incarnation of the worker is started, reached for control calls,
  closed and killed: :class:`~infaas.cluster.local_worker.ProcessTransport` (a subprocess on a
  socketpair) or :class:`~infaas.cluster.ray_worker.ActorTransport` (a Ray actor over an
  authenticated TCP wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from infaas.cluster.base import LoadSpec, ReplicaState, WorkerResult, WorkerState, spec_msg
from infaas.cluster.channel import Channel, Recovery, Transport
from infaas.errors import InfaasError, Unavailable, WorkerCrashed
from infaas.protocol.worker_wire import error_from_reply

if TYPE_CHECKING:
    from infaas.hardware import HardwareKind
    from infaas.protocol.shm import Shared

log = logging.getLogger("infaas.cluster")


class ManagedWorker:
    """One worker behind the handle the router, placement and controller use (``WorkerHandle``).

    Every transition goes through ``_set_state`` / ``_set_replica`` (logged, and bumping
    ``placement_version``). ``_specs`` is the target placement, kept across restarts. Loads and unloads
    of one variant are serialized, so an unload draining while a load of the same variant arrives
    cannot leave them disagreeing.
    """

    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self.transport = transport
        self.restarts = 0
        self.last_exit = ""
        self.state = WorkerState.STOPPED
        self.replicas: dict[str, ReplicaState] = {}
        self._ready: set[str] = set()  # replicas in READY (what routing sees)
        self.channel = Channel(transport.frames)
        self._incarnation = 0  # bumped when one ends: a late notice about an older one is ignored
        self._reader_task: asyncio.Task | None = None
        self._restart_task: asyncio.Task | None = None
        self._specs: dict[str, LoadSpec] = {}  # what this worker should host (survives restarts)
        self._locks: dict[str, asyncio.Lock] = {}
        self.placement_version = 0  # bumped whenever what is routable changes
        self._restart_times: list[float] = []

    # ---- what the transport knows ----------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.transport.pid

    @property
    def node(self) -> str:
        return self.transport.node

    @property
    def kind(self) -> HardwareKind | None:
        return self.transport.kind

    @property
    def cores(self) -> tuple[int, ...]:
        return self.transport.cores

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
        next mirror of the worker's placement."""
        if variant in self._ready:
            self._set_replica(variant, None)

    def assigned(self, variant: str) -> bool:
        return variant in self._specs or variant in self.replicas

    def target(self, variant: str) -> LoadSpec | None:
        """The target placement's spec for ``variant``, if it is assigned here."""
        return self._specs.get(variant)

    def empty(self) -> bool:
        return not self._specs and not self.replicas and not self.channel.pending

    def missing(self) -> list[LoadSpec]:
        """The target placement's variants that have no replica here (a reload that failed)."""
        return [spec for name, spec in self._specs.items() if name not in self.replicas] if self.alive else []

    def outstanding(self, variant: str | None = None) -> int:
        c = self.channel.outstanding
        return c[variant] if variant else sum(c.values())

    def rows_in_flight(self, variant: str) -> int:
        return self.channel.rows[variant]

    def running_ms(self, variant: str) -> float | None:
        return self.channel.running_ms(variant)

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

    def _clear_replicas(self) -> None:
        self.replicas, self._ready = {}, set()

    def _lock(self, variant: str) -> asyncio.Lock:
        lock = self._locks.get(variant)
        if lock is None:
            lock = self._locks[variant] = asyncio.Lock()
        return lock

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._set_state(WorkerState.STARTING)
        try:
            await self._open()
        except BaseException:
            self._set_state(WorkerState.STOPPED, "did not start")
            raise
        self._set_state(WorkerState.READY, f"pid {self.pid} on {self.node}, cores {list(self.cores)}")

    async def reattach(self, why: str) -> None:
        """Open the worker's current incarnation again after a death someone else recovered from (a
        follower's handle once the leader has replaced the actor); raises while there is none."""
        await self._open()
        self._set_state(WorkerState.READY, why)

    async def _open(self) -> None:
        incarnation = self._incarnation
        reader, writer = await self.transport.open(lambda why: self._lost(why, incarnation))
        self.channel.writer = writer
        self._clear_replicas()
        self._reader_task = asyncio.create_task(self._read(reader, incarnation))
        await self.mirror()

    async def _read(self, reader: asyncio.StreamReader, incarnation: int) -> None:
        why, ended = "", None
        try:
            await self.channel.dispatch(reader)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            ended = exc
        except Exception as exc:  # a corrupt frame or a bug here: the worker cannot be trusted, replace it
            why = f"unreadable reply ({type(exc).__name__}: {exc})"
            log.exception("worker %s: %s; killing it", self.name, why)
            ended = exc
            self.transport.kill()
        if incarnation != self._incarnation or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return
        reason = await self.transport.exit_reason(ended)  # a process is reaped here
        self._lost(why or reason, incarnation)

    def _lost(self, why: str, incarnation: int) -> None:
        """The incarnation ``incarnation`` died: fail what is in flight, then recover as the transport
        says (restart here, wait for another frontend's replacement, or stop)."""
        if incarnation != self._incarnation or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return
        self._incarnation += 1
        self.last_exit = why
        log.error("worker %s (pid %s on %s) died: %s", self.name, self.pid, self.node, why)
        self.channel.detach()
        self._clear_replicas()
        recovery = self.transport.recovery(why)
        self._set_state(WorkerState.STOPPED if recovery is Recovery.NONE else WorkerState.RESTARTING, why)
        then = "it is being restarted" if recovery is not Recovery.NONE else "it is not restarted"
        self.channel.fail_all(
            WorkerCrashed(
                f"worker {self.name} (pid {self.pid} on {self.node}) died ({why}) while serving this request; {then}"
            )
        )
        if recovery is Recovery.RESTART and (self._restart_task is None or self._restart_task.done()):
            self._restart_task = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        """One restart at a time: open a new incarnation, reload the target placement, then route again. A
        failed attempt closes what it started and tries again with backoff."""
        while self.state is WorkerState.RESTARTING:
            now = time.monotonic()
            self._restart_times = [t for t in self._restart_times if now - t < 60] + [now]
            if len(self._restart_times) > 3:
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (len(self._restart_times) - 3)))
            if self.state is not WorkerState.RESTARTING:
                return
            try:
                await self._open()
                self.restarts += 1  # counted before its variants are routable again (observers poll hosts())
                failed = await self._reload()
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
                await self._close(grace_s=0.0, kill=False)

    async def _reload(self) -> list[str]:
        """Load the target placement into a new incarnation; returns the variants that failed."""
        failed = []
        for spec in list(self._specs.values()):
            try:
                await self._load_replica(spec)
            except WorkerCrashed:
                raise  # the new incarnation died too: start again
            except InfaasError as exc:  # this variant stays missing; the controller retries it
                failed.append(spec.variant)
                log.error("worker %s: reload of %s failed: %s", self.name, spec.variant, exc.message)
        return failed

    async def _close(self, grace_s: float, kill: bool) -> None:
        """End the current incarnation: the transport closes (or kills) it, reading stops."""
        self._incarnation += 1
        await self.transport.close(grace_s, kill, self.channel)
        self.channel.detach()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._clear_replicas()

    async def stop(self, kill: bool = True) -> None:
        """Stop using the worker; end its process (or actor) when ``kill`` and the transport may."""
        self._set_state(WorkerState.STOPPING)
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
        await self._close(grace_s=5.0, kill=kill)
        self.channel.fail_all(Unavailable(f"worker {self.name} stopped"))
        self._set_state(WorkerState.STOPPED)

    def kill(self) -> None:
        """Kill the process or actor (tests and fault drills); it is replaced as after any death."""
        self.transport.kill()

    # ---- following -------------------------------------------------------------------------
    async def mirror(self) -> None:
        """Take the worker's own placement as this handle's, when others may change it (a Ray actor
        that several frontends use). A frontend that does not run the controller takes all of it
        (``all`` in the placement); the one that does only adopts replicas it did not load itself
        (another frontend's cold start), since its own loads and unloads are in flight through this
        handle."""
        if self.state not in (WorkerState.READY, WorkerState.STARTING, WorkerState.RESTARTING):
            return
        incarnation = self._incarnation
        try:
            p = await self.transport.placement()
        except WorkerCrashed as exc:
            self._lost(exc.message, incarnation)
            return
        if p is None or incarnation != self._incarnation:
            return
        states = {v: ReplicaState(s) for v, s in p["states"].items()}
        if not p["all"]:
            adopt = [  # the worker records a replica's spec before it loads it
                v
                for v, s in states.items()
                if s is ReplicaState.READY
                and v in p["specs"]
                and v not in self.replicas
                and v not in self._specs
                and not self._lock(v).locked()
            ]
            for v in adopt:
                self._specs[v] = p["specs"][v]
                self._set_replica(v, ReplicaState.READY)
            return
        self._specs = dict(p["specs"])
        if states != self.replicas:
            self.replicas = states
            self._ready = {v for v, s in states.items() if s is ReplicaState.READY}
            self.placement_version += 1

    # ---- calls ---------------------------------------------------------------------------
    def _check_running(self) -> None:
        if not self.channel.attached or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            raise Unavailable(f"worker {self.name} is not running ({self.last_exit or self.state.value})")

    async def _call(self, message: dict, timeout: float = 60.0) -> Any:
        self._check_running()
        reply = await self.transport.call(message, timeout, self.channel)
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
        """Load ``spec`` in the current incarnation unless it is there already (None) or left the target."""
        async with self._lock(spec.variant):
            if self._specs.get(spec.variant) is not spec or self.replicas.get(spec.variant) is ReplicaState.READY:
                return None
            self._set_replica(spec.variant, ReplicaState.LOADING)
            try:
                result = await self._call({"op": "load", **spec_msg(spec)}, timeout=600)
            except BaseException:
                self._set_replica(spec.variant, None)
                raise
            self._set_replica(spec.variant, ReplicaState.READY)
            return result

    async def resize(self, variant: str, instances: int) -> dict[str, Any]:
        """Run ``instances`` runtime instances of a loaded variant (more share its queue; surplus ones
        finish their batch first); the target placement keeps the count for reloads after a restart."""
        async with self._lock(variant):
            spec = self._specs.get(variant)
            if spec is None or self.replicas.get(variant) is not ReplicaState.READY:
                raise Unavailable(f"{variant} is not loaded on worker {self.name}")
            result = await self._call({"op": "resize", "variant": variant, "instances": instances}, timeout=600)
            self._specs[variant] = dataclasses.replace(spec, instances=int(result["instances"]))
            return result

    async def unload(self, variant: str, drain_s: float = 30.0) -> None:
        """Leave the target placement, stop routing, let the requests already sent finish, then unload."""
        async with self._lock(variant):
            self._specs.pop(variant, None)
            if variant not in self.replicas:
                return
            self._set_replica(variant, ReplicaState.DRAINING)
            try:
                if not self.transport.drains_all:  # wait (up to drain_s) for this frontend's requests
                    until = time.monotonic() + drain_s
                    while self.channel.outstanding[variant] and time.monotonic() < until and self.channel.attached:
                        await asyncio.sleep(0.01)
                    self._set_replica(variant, ReplicaState.UNLOADING)
                if self.channel.attached:
                    await self._call({"op": "unload", "variant": variant, "drain_s": drain_s}, timeout=drain_s + 60)
            finally:
                self._set_replica(variant, None)

    def forget_shm(self, key: str) -> None:
        """The shared-memory object ``key`` is no longer registered: a worker on this machine unmaps it."""
        if self.transport.shares_memory:
            self.channel.notify({"op": "forget_shm", "key": key})

    def turned_away(self, variant: str, rows: int) -> None:
        """The selection refused ``rows`` (429) that ``variant`` here meets its objective with when idle."""
        self.channel.turned_away(variant, rows)

    async def stats(self) -> dict[str, Any]:
        return await self._call({"op": "stats"}, timeout=10)

    async def profile(self, request: dict, timeout: float = 600) -> dict[str, Any]:
        """Run the worker's ``profile`` op (see ``infaas.profiler``)."""
        return await self._call({"op": "profile", **request}, timeout=timeout)

    async def infer(
        self,
        variant: str,
        inputs: dict[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        drop_late: bool = True,
        offline: bool = False,
        shm: Shared | None = None,
    ) -> WorkerResult:
        """Send a request and wait for its reply. Rows count as in flight until the worker answers,
        even when the caller gives up: a cancelled caller sends ``cancel`` (the worker drops the
        request if it is still queued), and the frontend's view stays the worker's. ``shm``: the inputs
        that lie in shared memory and the outputs that go there; a worker on this machine reads and
        writes them in place, any other gets the tensors in the frames."""
        self._check_running()
        message = {
            "op": "infer",
            "variant": variant,
            "inputs": inputs,
            "rows": rows,
            "arrival": time.monotonic(),
            "deadline": deadline,
            "drop_late": drop_late,
            "offline": offline,
        }
        if shm is not None and self.transport.shares_memory:
            message["inputs"] = {**inputs, **shm.inputs}
            message["out"] = shm.outputs
        rid, fut = self.channel.send(message, variant, rows)
        try:
            await self.channel.drain()
            reply = await fut
        except asyncio.CancelledError:
            self.channel.cancel(rid, variant)
            raise
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        fields = (reply[k] for k in ("outputs", "queue_ns", "compute_ns", "batch_size", "batch_pos"))
        return WorkerResult(*fields, reply.get("scale"))
