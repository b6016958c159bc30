"""Ray cluster backend: workers are Ray actors (Ray core), placed by Ray on nodes that have their resources.

The actor runs the same :class:`infaas.worker.process.Worker` as a local worker process (the same
batching queues, executor threads and runtimes). Ray places it, starts and kills it, reports its death,
carries its control calls (load with the fencing token, unload, stats) and ships model files (bytes
put in the object store once per artifact, cached on each node's disk, content-addressed and
verified: remote nodes need no shared file system). Requests do not go through Ray: each frontend
opens a TCP connection to the actor (its address comes back from ``hello``) and sends the local
worker's frames (pickle 5, numpy buffers out of band, no JSON), because a Ray actor call cost ~1 ms
round trip on the 2-core VM against 0.13 ms for a frame (bench/cluster). Each actor reports its node
and hardware kind.

Every actor is named (``<namespace>/<prefix>-wN``) and detached, so it outlives the frontend that started
it: several frontends attach to the same workers (the list is in the metadata store) and a new leader
adopts them. Each actor is the source of truth of its own placement (what it should host, each
replica's state); frontends that do not run the controller mirror it by polling.

Death: an actor or its node dying fails the long-running ``watch`` call the handle keeps open (Ray
reports it when its health checks notice), the requests in flight fail with ``WorkerCrashed``, and the
frontend that runs the controller starts a replacement actor, wherever Ray finds room, and reloads the
worker's target placement there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infaas.cluster.base import WorkerState
from infaas.cluster.handle import ManagedWorker
from infaas.cluster.ray_worker import ActorTransport, ray_worker
from infaas.errors import Unavailable
from infaas.hardware import local_kind
from infaas.protocol.peer_wire import new_secret
from infaas.registry.store import unreachable

log = logging.getLogger("infaas.cluster.ray")


def wire_secret(store: Any) -> str:
    """The deployment's request-wire secret: created by the first frontend, kept in the metadata store
    (whoever can read the store can talk to the workers; nobody else can)."""
    with store.transaction():
        record = store.get("secret", "wire")
        if record is None:
            record = {"secret": new_secret()}
            store.put("secret", "wire", None, record)
    return record["secret"]


class RayCluster:
    """Workers as Ray actors on a Ray cluster (``ray.init(address)``; None starts a local one).

    ``manages`` (from the composition root) says whether this frontend runs the controller; the worker
    list lives in the metadata store (kind ``worker``), so every frontend sees the same workers.
    """

    def __init__(
        self,
        store: Any,
        *,
        workers: int = 1,
        cores_per_worker: int = 1,
        address: str | None = None,
        namespace: str = "infaas",
        memory_mb: float = 0.0,
        allow_spinning: bool = False,
        start_timeout_s: float = 60.0,
        max_workers: int = 0,
        cache_dir: str | None = None,
        manages: Callable[[], bool] = lambda: True,
        fence: Callable[[], int | None] = lambda: None,
        frontend_id: str = "",
        sync_s: float = 0.5,
        node_ip: str | None = None,
        node_host: str | None = None,
        node_ports: tuple[int, int] = (0, 0),
        max_frame_bytes: int = 2**30,
    ) -> None:
        self.store = store
        self.initial = workers
        self.cores_per_worker = max(1, cores_per_worker)
        self.address = address
        self.namespace = namespace
        self.prefix = "infaas"
        self.memory_mb = memory_mb
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        self.max_workers = max_workers
        self.cache_dir = cache_dir or str(Path(os.environ.get("TMPDIR", "/tmp")) / "infaas-ray-artifacts")
        self.manages = manages
        self.fence = fence
        self.frontend_id = frontend_id
        self.sync_s = sync_s
        # the catalog's kind: this machine's until the first worker reports its own (``ActorTransport.kind``);
        # profiles are measured on that worker's node, so they are of that kind
        self.kind = local_kind()
        self._workers: list[ManagedWorker] = []
        self._artifacts: dict[str, Any] = {}  # artifact key -> object ref (put once per frontend)
        self._sync_task: asyncio.Task | None = None
        self.deaths: list[dict] = []
        self.node_ip = node_ip
        # the request wire's settings, sent to each actor; the secret is the deployment's, from the store
        self.wire: dict[str, Any] = {
            "secret": "",
            "host": node_host,
            "ports": list(node_ports),
            "max_body_bytes": max_frame_bytes,
        }

    @property
    def workers(self) -> list[ManagedWorker]:
        return self._workers

    @property
    def worker_limit(self) -> int:
        """The controller's ceiling on workers: --max-workers, else what the cluster's CPUs hold now."""
        import ray

        return self.max_workers or (self.capacity() if ray.is_initialized() else 1024)

    def resources(self) -> dict[str, float]:
        import ray

        return ray.cluster_resources()

    def capacity(self) -> int:
        """Workers the cluster's CPUs can hold now (Ray's autoscaler may add nodes beyond it)."""
        cpus = int(self.resources().get("CPU", 0))
        return max(1, cpus // self.cores_per_worker)

    def can_add(self) -> str | None:
        import ray

        limit = self.max_workers or self.capacity()
        if len(self._workers) >= limit:
            return f"{len(self._workers)} workers, the limit is {limit}"
        free = ray.available_resources().get("CPU", 0.0)
        if free < self.cores_per_worker and not self.max_workers:
            return f"{free:g} free CPU in the Ray cluster, a worker needs {self.cores_per_worker}"
        return None

    def artifact(self, message: dict) -> Any:
        """The model file's bytes in the object store (put once per artifact by this frontend)."""
        import ray

        key = Path(message["path"]).name
        ref = self._artifacts.get(key)
        if ref is None:
            ref = self._artifacts[key] = ray.put(Path(message["path"]).read_bytes())
        message["key"] = key
        return ref

    def measuring_worker(self, name: str) -> ManagedWorker:
        """An actor for one measurement, on the node of the pool's first worker when there is one (so
        the profile is that node's hardware, not the frontend's), sharing its CPU (``num_cpus`` 0:
        the pool holds the cluster's CPUs; the profiler waits for quiet moments); killed afterwards,
        never recorded in the store."""
        return ray_worker(name, self, measuring=True)

    def record(self, worker: ActorTransport) -> None:
        self.store.put(
            "worker",
            worker.name,
            None,
            {
                "name": worker.name,
                "actor": worker.actor_name,
                "node": worker.node_ip,
                "node_id": worker.node_id,
                "cores": self.cores_per_worker,
                "incarnation": worker.incarnation,
                "kind": worker.kind.as_dict() if worker.kind else None,
            },
        )

    def on_death(self, worker: ActorTransport, why: str) -> None:
        self.deaths.append({"time": time.time(), "worker": worker.name, "node": worker.node_ip, "why": why})

    def _next_name(self) -> str:
        taken = {w.name for w in self._workers} | {r["name"] for r in self.store.list("worker")}
        return next(f"w{i}" for i in itertools.count() if f"w{i}" not in taken)

    async def add_worker(self) -> ManagedWorker:
        if not self.manages():
            raise Unavailable("only the frontend that runs the controller adds workers")
        if (why := self.can_add()) is not None:
            raise Unavailable(f"cannot add a worker: {why}")
        worker = ray_worker(self._next_name(), self)
        await worker.start()
        self._workers = [*self._workers, worker]
        return worker

    async def remove_worker(self, name: str, only_if_empty: bool = False) -> bool:
        worker = next((w for w in self._workers if w.name == name), None)
        if worker is None or (only_if_empty and not worker.empty()) or not self.manages():
            return False
        self._workers = [w for w in self._workers if w is not worker]
        self.store.delete("worker", name)
        await worker.stop(kill=True)
        return True

    async def start(self) -> None:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "namespace": self.namespace,
                "ignore_reinit_error": True,
                "log_to_driver": False,
                "include_dashboard": False,
            }
            if self.address:
                kwargs["address"] = self.address
            if self.node_ip:
                kwargs["_node_ip_address"] = self.node_ip
            await asyncio.to_thread(ray.init, **kwargs)
        self.wire["secret"] = wire_secret(self.store)
        await self.sync()
        if self.manages():
            while len(self._workers) < self.initial:
                await self.add_worker()
        first = next((w.kind for w in self._workers if w.kind is not None), None)
        if first is not None:
            self.kind = first
        self._sync_task = asyncio.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if unreachable(exc):
                    log.warning("Ray cluster sync: the metadata store is unreachable (%s)", type(exc).__name__)
                else:
                    log.exception("Ray cluster sync failed")

    async def sync(self) -> None:
        """Attach to the workers in the store's list, forget those gone from it; mirror placements
        unless this frontend runs the controller (then its handles are the actors' writers)."""
        listed = {r["name"]: r for r in self.store.list("worker")}
        mine = {w.name: w for w in self._workers}
        for name, w in mine.items():
            if name not in listed and not self.manages():
                await w.stop(kill=False)
        kept = [w for w in self._workers if w.name in listed or self.manages()]
        for name in listed:
            if name not in mine:
                w = ray_worker(name, self)
                try:
                    await w.start()
                except Exception as exc:
                    log.warning("cannot attach to worker %s: %s", name, exc)
                    continue
                kept.append(w)
        self._workers = kept
        for w in self._workers:
            if w.state is WorkerState.RESTARTING and not self.manages():
                # a follower's dead handle: the leader replaces the actor (a new name in the worker's record)
                with contextlib.suppress(Exception):
                    await w.reattach("attached to the replacement actor")
            else:
                await w.mirror()

    async def stop(self) -> None:
        """Stop this frontend's handles; kill the actors only when no other frontend is alive."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        try:
            others = [
                f
                for f in self.store.list("frontend")
                if f.get("expires", 0) > time.time() and f.get("id") != self.frontend_id
            ]
        except Exception as exc:  # the store is gone: others may still use the actors, so leave them running
            log.warning("cannot read the frontend list (%s); leaving the Ray actors running", type(exc).__name__)
            others = [{"unknown": True}]
        kill = self.manages() and not others
        await asyncio.gather(*(w.stop(kill=kill) for w in self._workers), return_exceptions=True)
        if kill:
            for w in self._workers:
                self.store.delete("worker", w.name)
