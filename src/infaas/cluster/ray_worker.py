"""The Ray actor transport (:class:`ActorTransport`): a worker that is a Ray actor, behind the same
handle (:class:`~infaas.cluster.handle.ManagedWorker`) and lifecycle states as a local process;
requests over a TCP connection to the actor, control calls and death notices through Ray."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infaas.cluster.base import spec_from_msg
from infaas.cluster.channel import Channel, Recovery
from infaas.cluster.handle import ManagedWorker
from infaas.cluster.ray_actor import actor_class
from infaas.errors import InfaasError, Unavailable, WorkerCrashed
from infaas.hardware import HardwareKind
from infaas.protocol.peer_wire import Frames, connect

if TYPE_CHECKING:
    from infaas.cluster.ray import RayCluster

log = logging.getLogger("infaas.cluster.ray")


def _dead(exc: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(exc, rex.RayActorError | rex.ActorUnavailableError | rex.WorkerCrashedError)


class ActorTransport:
    """Each incarnation is a detached Ray actor (:class:`~infaas.cluster.ray_actor.WorkerActor`), named in
    the store's worker record so that every frontend reaches the same one. Requests travel over an
    authenticated TCP connection to the actor; control calls (with the model file, and the controller's
    fence) and death notices through Ray. Only the frontend that runs the controller (``manages()``)
    starts, replaces and kills actors; the others attach to the named actor and mirror its placement."""

    drains_all = True  # the actor counts every frontend's requests and drains them before an unload
    shares_memory = False  # maybe another machine: tensors always travel in the frames

    def __init__(self, name: str, cluster: RayCluster, measuring: bool = False) -> None:
        self.name = name
        self.cluster = cluster
        self.measuring = measuring  # one measurement's actor: not in the pool, not in the store
        self.frames = Frames(cluster.wire["max_body_bytes"])  # authenticated, pickle-free (protocol.peer_wire)
        self.start_timeout_s = cluster.start_timeout_s
        self.actor: Any = None
        self.actor_name = f"{cluster.prefix}-{name}"
        self.incarnation = 0
        self.pid: int | None = None
        self.node_id = ""
        self.node_ip = ""
        self.node = "unplaced"
        self.address: tuple[str, int] = ("", 0)
        self.kind: HardwareKind | None = None
        self.cores: tuple[int, ...] = ()
        self._replacing = False  # the actor died: the next open starts a new one
        self._watch_task: asyncio.Task | None = None
        self._version = -1  # the actor's placement version last mirrored

    async def open(self, lost: Callable[[str], None]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Attach to the actor named in the store's worker record (another frontend's, or this one's before a
        restart of the frontend); the leader creates a new actor, under a new name, when there is none alive.
        A dead actor's name is never reused (Ray may hold it until it has cleaned up after a lost node)."""
        c = self.cluster
        actor = await self._find()
        if actor is None and not c.manages() and not self.measuring:
            raise Unavailable(f"worker {self.name} has no live actor yet (the controller is replacing it)")
        if actor is None:
            actor = self._create()
        self._replacing = False
        hello = await self._hello(actor)
        try:
            reader, writer = await connect(hello["host"], hello["port"], c.wire["secret"].encode(), 10.0)
        except Exception as exc:
            raise Unavailable(
                f"worker {self.name}: cannot open an authenticated connection to its actor at "
                f"{hello['host']}:{hello['port']}: {exc!r}"
            ) from exc
        self.actor = actor
        self.pid, self.node_id, self.node_ip = hello["pid"], hello["node_id"], hello["node_ip"]
        self.node = self.node_ip
        self.address = (hello["host"], hello["port"])  # the actor's request listener
        k = hello["kind"]
        self.kind = HardwareKind(k["machine"], k["cpu"], tuple(k["flags"]), k["gpu"])
        self.cores = tuple(range(hello["threads"]))
        self._version = -1
        self._watch_task = asyncio.create_task(self._watch(actor, lost))
        if c.manages() and not self.measuring:
            c.record(self)
        return reader, writer

    async def _find(self) -> Any:
        """The live actor of the store's worker record, if any (not when replacing a dead one)."""
        import ray

        c = self.cluster
        record = {} if self.measuring else c.store.get("worker", self.name) or {}
        current = int(record.get("incarnation", -1))
        self.incarnation = current + 1  # a new actor's, unless the recorded one is alive
        if not record.get("actor") or self._replacing:
            return None
        try:
            actor = await asyncio.to_thread(ray.get_actor, record["actor"], namespace=c.namespace)  # a GCS call
            await asyncio.wait_for(actor.hello.remote(), 5.0)
        except Exception:
            return None
        self.actor_name, self.incarnation = record["actor"], current
        return actor

    def _create(self) -> Any:
        c = self.cluster
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
        return actor_class().options(**opts).remote(c.cores_per_worker, c.allow_spinning, c.cache_dir, c.wire)

    async def _hello(self, actor: Any) -> dict:
        import ray

        c = self.cluster
        try:
            return await asyncio.wait_for(actor.hello.remote(), self.start_timeout_s)
        except Exception as exc:
            if c.manages() or self.measuring:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            raise Unavailable(
                f"worker {self.name} (Ray actor {self.actor_name}) did not start within "
                f"{self.start_timeout_s:g} s: {exc!r} (does any node have {c.cores_per_worker} "
                "free CPU?)"
            ) from exc

    async def _watch(self, actor: Any, lost: Callable[[str], None]) -> None:
        """The actor's death (or its node's) ends this call; the equivalent of a process's EOF."""
        try:
            await actor.watch.remote()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.actor is actor:
            lost(why)

    async def exit_reason(self, exc: BaseException | None) -> str:
        return f"request connection lost ({type(exc).__name__})"

    def recovery(self, why: str) -> Recovery:
        """A measurement's actor is not replaced (its death fails that measurement); a pool worker's is,
        by the frontend that runs the controller; the others wait for that replacement."""
        self.actor = None
        if self.measuring:
            return Recovery.NONE
        self.cluster.on_death(self, why)
        self._replacing = self.cluster.manages()
        return Recovery.RESTART if self._replacing else Recovery.AWAIT

    async def close(self, grace_s: float, kill: bool, channel: Channel) -> None:
        """Stop watching the actor; kill it when ``kill`` and this frontend manages workers."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        actor, self.actor = self.actor, None
        if kill and actor is not None and (self.cluster.manages() or self.measuring):
            import ray

            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def kill(self) -> None:
        """Kill the actor (tests and fault drills); the leader replaces it."""
        import ray

        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)

    async def placement(self) -> dict | None:
        """The actor's placement, if it changed since the last call (a measurement's: never asked)."""
        if self.actor is None or self.measuring:
            return None
        try:
            p = await asyncio.wait_for(self.actor.placement.remote(), 5.0)
        except Exception as exc:
            if _dead(exc):
                raise WorkerCrashed(type(exc).__name__) from None
            return None
        if p["version"] == self._version:
            return None
        self._version = p["version"]
        specs = {v: spec_from_msg(m) for v, m in p["specs"].items()}
        return {"specs": specs, "states": p["states"], "all": not self.cluster.manages()}

    async def _remote(self, ref: Any, timeout: float) -> dict:
        try:
            return await asyncio.wait_for(_awaited(ref), timeout)
        except asyncio.CancelledError:
            raise
        except InfaasError:
            raise
        except Exception as exc:
            if _dead(exc):
                raise WorkerCrashed(f"worker {self.name} died during the call: {type(exc).__name__}") from None
            raise

    async def call(self, message: dict, timeout: float, channel: Channel) -> dict:
        """A control call as an actor method; a model file travels with a load or a profile (the actor's
        node may not have it), and the controller's fence with a load, a resize or an unload."""
        actor, c = self.actor, self.cluster
        if actor is None:
            raise Unavailable(f"worker {self.name} has no actor")
        op = message["op"]
        msg = {k: v for k, v in message.items() if k != "op"}
        if op == "load":
            ref = actor.load.remote(msg, c.artifact(msg), c.fence())
        elif op == "profile":
            ref = actor.profile.remote(msg, c.artifact(msg))
        elif op == "unload":
            ref = actor.unload.remote(message["variant"], message.get("drain_s", 30.0), c.fence())
        elif op == "resize":
            ref = actor.resize.remote(message["variant"], message["instances"], c.fence())
        else:
            ref = actor.call.remote(message)
        return await self._remote(ref, timeout)


def ray_worker(name: str, cluster: RayCluster, measuring: bool = False) -> ManagedWorker:
    """A pool worker that is a Ray actor (or, ``measuring``, one measurement's actor), behind the same
    handle and lifecycle states as a local process."""
    return ManagedWorker(name, ActorTransport(name, cluster, measuring))


def _measuring_options(cluster: RayCluster, name: str) -> dict[str, Any]:
    """A measuring actor's options: a name of its own, no CPU reserved, pinned to the node of the pool's
    first live worker (that node's hardware is what serves), anywhere with a free CPU when there is none."""
    import secrets

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    opts: dict[str, Any] = {"name": f"{cluster.prefix}-{name}-{secrets.token_hex(3)}", "lifetime": None}  # dies with us
    host = next((w.transport for w in cluster.workers if w.transport.node_id and w.alive), None)
    if host is not None:
        opts["num_cpus"] = 0
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(host.node_id, soft=False)
    return opts


async def _awaited(ref: Any) -> Any:
    return await ref
