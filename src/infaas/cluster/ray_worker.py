"""The frontend's handle on a Ray actor worker (:class:`RayWorker`): the same lifecycle and
replica states as a local worker; requests over a TCP connection to the actor, control calls and
death notices through Ray."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from infaas.cluster.base import LoadSpec, ReplicaState, WorkerState
from infaas.cluster.local_worker import LocalWorker
from infaas.cluster.ray_actor import actor_class
from infaas.errors import InfaasError, Unavailable, WorkerCrashed
from infaas.hardware import HardwareKind
from infaas.protocol.peer_wire import Frames, connect
from infaas.protocol.worker_wire import error_from_reply

if TYPE_CHECKING:
    from infaas.cluster.ray import RayCluster

log = logging.getLogger("infaas.cluster.ray")


def _dead(exc: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(exc, rex.RayActorError | rex.ActorUnavailableError | rex.WorkerCrashedError)


class RayWorker(LocalWorker):
    """A worker that is a Ray actor, behind the same handle (and the same lifecycle states) as a local
    process. ``manages()`` says whether this frontend runs the controller: only then does it start,
    restart and kill actors; otherwise it attaches to the named actor and mirrors its placement."""

    def __init__(self, name: str, cluster: RayCluster, measuring: bool = False) -> None:
        super().__init__(name, (), start_timeout_s=cluster.start_timeout_s, restart=not measuring)
        self.measuring = measuring  # one measurement's actor: not in the pool, not in the store
        self.cluster = cluster
        self.actor: Any = None
        self.node_id = ""
        self.node_ip = ""
        self.address: tuple[str, int] = ("", 0)
        self.node = "unplaced"
        self.kind: HardwareKind | None = None
        self._watch_task: asyncio.Task | None = None
        self._actor_version = -1
        self.actor_name = f"{cluster.prefix}-{name}"
        self.incarnation = 0
        self._replacing = False  # the actor died: the next spawn starts a new one
        self._frames = Frames(cluster.wire["max_body_bytes"])  # authenticated, pickle-free (protocol.peer_wire)

    # ---- lifecycle -------------------------------------------------------------------------
    async def _spawn(self) -> None:
        """Attach to the actor named in the store's worker record (another frontend's, or this one's before a
        restart of the frontend); the leader creates a new actor, under a new name, when there is none alive.
        A dead actor's name is never reused (Ray may hold it until it has cleaned up after a lost node)."""
        import ray

        c = self.cluster
        record = {} if self.measuring else c.store.get("worker", self.name) or {}
        actor = None
        if record.get("actor") and not self._replacing:
            try:
                actor = await asyncio.to_thread(ray.get_actor, record["actor"], namespace=c.namespace)  # a GCS call
                await asyncio.wait_for(actor.hello.remote(), 5.0)
                self.actor_name = record["actor"]
            except Exception:
                actor = None
        if actor is None and not c.manages() and not self.measuring:
            raise Unavailable(f"worker {self.name} has no live actor yet (the controller is replacing it)")
        if actor is None:
            self.incarnation = int(record.get("incarnation", -1)) + 1
            self.actor_name = f"{c.prefix}-{self.name}" + (f"-{self.incarnation}" if self.incarnation else "")
            opts: dict[str, Any] = {
                "name": self.actor_name,
                "namespace": c.namespace,
                "lifetime": "detached",
                "num_cpus": c.cores_per_worker,
                "max_concurrency": 4096,
                "max_restarts": 0,
            }
            if c.memory_mb:
                opts["memory"] = int(c.memory_mb * 2**20)
            if self.measuring:
                opts.update(_measuring_options(c, self.name))
                self.actor_name = opts["name"]
            log.info("worker %s: starting Ray actor %s (%d CPU)", self.name, self.actor_name, c.cores_per_worker)
            actor = actor_class().options(**opts).remote(c.cores_per_worker, c.allow_spinning, c.cache_dir, c.wire)
        self._replacing = False
        try:
            hello = await asyncio.wait_for(actor.hello.remote(), self.start_timeout_s)
        except Exception as exc:
            if c.manages() or self.measuring:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            raise Unavailable(
                f"worker {self.name} (Ray actor {self.actor_name}) did not start within "
                f"{self.start_timeout_s:g} s: {exc!r} (does any node have {c.cores_per_worker} "
                "free CPU?)"
            ) from exc
        try:
            reader, writer = await connect(hello["host"], hello["port"], c.wire["secret"].encode(), 10.0)
        except Exception as exc:
            raise Unavailable(
                f"worker {self.name}: cannot open an authenticated connection to its actor at "
                f"{hello['host']}:{hello['port']}: {exc!r}"
            ) from exc
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_replies(reader, writer))
        self.actor = actor
        self.pid, self.node_id, self.node_ip = hello["pid"], hello["node_id"], hello["node_ip"]
        self.node = self.node_ip
        self.address = (hello["host"], hello["port"])  # the actor's request listener
        k = hello["kind"]
        self.kind = HardwareKind(k["machine"], k["cpu"], tuple(k["flags"]), k["gpu"])
        self.cores = tuple(range(hello["threads"]))
        self.replicas, self._ready = {}, set()
        self._actor_version = -1
        self._watch_task = asyncio.create_task(self._watch(actor))
        if self.measuring:
            return
        if c.manages():
            c.record(self)
        else:
            await self.mirror()

    async def _watch(self, actor: Any) -> None:
        """The actor's death (or its node's) ends this call; the equivalent of a process's EOF."""
        try:
            await actor.watch.remote()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.actor is not actor or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return
        self.died(why)

    def died(self, why: str) -> None:
        """Mark the worker dead: fail what is in flight, and (the leader) start a replacement."""
        if self.state in (WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.RESTARTING):
            return
        self.last_exit = why
        log.error("worker %s (Ray actor %s on node %s) died: %s", self.name, self.actor_name, self.node_ip, why)
        self.actor = None
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.replicas, self._ready = {}, set()
        self._set_state(WorkerState.RESTARTING, why)
        self._fail_pending(
            WorkerCrashed(
                f"worker {self.name} (Ray actor on {self.node_ip}) died ({why}) while "
                "serving this request; it is being replaced"
            )
        )
        if self.measuring:  # one measurement's actor: its death fails that measurement, nothing to replace
            self._set_state(WorkerState.STOPPED, why)
            return
        self.cluster.on_death(self, why)
        self._replacing = self.cluster.manages()
        if self.cluster.manages() and (self._restart_task is None or self._restart_task.done()):
            self._restart_task = asyncio.create_task(self._restart())

    async def _read_replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Replies on the request connection; its loss is the worker's death (the leader replaces it)."""
        try:
            await self._dispatch_replies(reader)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = f"request connection lost ({type(exc).__name__})"
        if self._writer is writer and self.state is WorkerState.READY:
            self.died(why)

    async def _close_process(self, grace_s: float) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        self.replicas, self._ready = {}, set()

    async def stop(self, kill: bool = True) -> None:
        """Stop using the actor; kill it when ``kill`` and this frontend manages workers."""
        self._set_state(WorkerState.STOPPING)
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
        actor, self.actor = self.actor, None
        await self._close_process(0)
        if kill and actor is not None and (self.cluster.manages() or self.measuring):
            import ray

            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._fail_pending(Unavailable(f"worker {self.name} stopped"))
        self._set_state(WorkerState.STOPPED)

    def kill(self) -> None:
        """Kill the actor (tests and fault drills); the leader replaces it."""
        import ray

        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)

    # ---- following -------------------------------------------------------------------------
    async def mirror(self) -> None:
        """Take the actor's placement as this handle's. A frontend that does not run the controller takes
        all of it; the one that does only adopts replicas it did not load itself (another frontend's
        cold start), since its own loads and unloads are in flight through this handle."""
        if self.actor is None or self.state not in (WorkerState.READY, WorkerState.STARTING):
            return
        try:
            p = await asyncio.wait_for(self.actor.placement.remote(), 5.0)
        except Exception as exc:
            if _dead(exc):
                self.died(type(exc).__name__)
            return
        if p["version"] == self._actor_version:
            return
        self._actor_version = p["version"]
        specs = {v: _spec_from_msg(m) for v, m in p["specs"].items()}
        states = {v: ReplicaState(s) for v, s in p["states"].items()}
        if self.cluster.manages():
            adopt = {
                v
                for v, s in states.items()
                if s is ReplicaState.READY
                and v in specs
                and v not in self.replicas
                and v not in self._specs
                and not self._lock(v).locked()
            }
            for v in adopt:  # the actor records a replica's spec before it loads it
                self._specs[v] = specs[v]
                self._set_replica(v, ReplicaState.READY)
            return
        self._specs = specs
        if states != self.replicas:
            self.replicas = states
            self._ready = {v for v, s in states.items() if s is ReplicaState.READY}
            self.placement_version += 1

    # ---- calls -----------------------------------------------------------------------------
    def _actor(self) -> Any:
        if self.actor is None or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            raise Unavailable(f"worker {self.name} is not running ({self.last_exit or self.state.value})")
        return self.actor

    async def _remote(self, ref: Any, timeout: float) -> dict:
        try:
            reply = await asyncio.wait_for(_awaited(ref), timeout)
        except asyncio.CancelledError:
            raise
        except InfaasError:
            raise
        except Exception as exc:
            if _dead(exc):
                raise WorkerCrashed(f"worker {self.name} died during the call: {type(exc).__name__}") from None
            raise
        if not reply["ok"]:
            raise error_from_reply(reply, self.name)
        return reply

    async def _call(self, message: dict, timeout: float = 60.0) -> Any:
        actor = self._actor()
        op = message["op"]
        if op == "load":
            msg = {k: v for k, v in message.items() if k != "op"}
            ref = actor.load.remote(msg, self.cluster.artifact(message), self.cluster.fence())
        elif op == "profile":  # the model file travels as for a load: the actor's node may not have it
            msg = {k: v for k, v in message.items() if k != "op"}
            ref = actor.profile.remote(msg, self.cluster.artifact(message))
        elif op == "unload":
            ref = actor.unload.remote(message["variant"], message.get("drain_s", 30.0), self.cluster.fence())
        else:
            ref = actor.call.remote(message)
        return (await self._remote(ref, timeout))["result"]

    async def _drain_and_unload(self, variant: str, drain_s: float) -> None:
        """The actor drains every frontend's requests (it counts them all), then unloads."""
        if self.actor is not None:
            await self._call({"op": "unload", "variant": variant, "drain_s": drain_s}, timeout=drain_s + 60)


def _measuring_options(cluster: RayCluster, name: str) -> dict[str, Any]:
    """A measuring actor's options: a name of its own, no CPU reserved, pinned to the node of the pool's
    first live worker (that node's hardware is what serves), anywhere with a free CPU when there is none."""
    import secrets

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    opts: dict[str, Any] = {"name": f"{cluster.prefix}-{name}-{secrets.token_hex(3)}", "lifetime": None}  # dies with us
    host = next((w for w in cluster.workers if w.node_id and w.alive), None)
    if host is not None:
        opts["num_cpus"] = 0
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(host.node_id, soft=False)
    return opts


async def _awaited(ref: Any) -> Any:
    return await ref


def _spec_from_msg(m: dict) -> LoadSpec:
    slope, intercept = m.get("latency_ms") or (0.0, 0.0)
    return LoadSpec(
        variant=m["variant"],
        path=m.get("path", ""),
        threads=m["threads"],
        max_batch=m["max_batch"],
        provider=m.get("provider", "cpu"),
        max_delay_s=m.get("max_delay_s", 0.0),
        instances=m.get("instances", 1),
        latency_slope_ms=slope,
        latency_intercept_ms=intercept,
        max_queue_s=m.get("max_queue_s"),
        max_queue_bytes=m.get("max_queue_bytes"),
        admission=m.get("admission", True),
        sha256=m.get("sha256", ""),
        batch_ms=tuple(sorted((int(b), float(ms)) for b, ms in (m.get("batch_ms") or {}).items())),
    )
