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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infaas.cluster.base import LoadSpec, ReplicaState, WorkerState
from infaas.cluster.local import LocalWorker
from infaas.errors import InfaasError, Unavailable, WorkerCrashed
from infaas.hardware import HardwareKind, local_kind
from infaas.protocol.worker_wire import error_from_reply

log = logging.getLogger("infaas.cluster.ray")


# ---- the actor (runs in a Ray worker process, on any node) ------------------------------------------
class _Replies:
    """The Worker's channel inside an actor: a reply resolves the future its request waits on, on the
    actor's event loop (executor threads call ``send``)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.futures: dict[int, asyncio.Future] = {}

    def expect(self, rid: int) -> asyncio.Future:
        self.loop = self.loop or asyncio.get_running_loop()
        fut = self.futures[rid] = self.loop.create_future()
        return fut

    def send(self, message: dict) -> None:
        fut = self.futures.pop(message["id"], None)
        if fut is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(_resolve, fut, message)


def _resolve(fut: asyncio.Future, message: dict) -> None:
    if not fut.done():
        fut.set_result(message)


class WorkerActor:
    """One infaas worker as a Ray actor. Methods return reply dicts (``ok`` / ``error`` / ``kind``), as the
    local worker's socket protocol does, so the frontend maps errors the same way."""

    def __init__(self, threads: int, allow_spinning: bool, cache_dir: str) -> None:
        from infaas.worker.process import Worker

        self.threads = threads
        self.cache = Path(cache_dir)
        self.replies = _Replies()
        self.worker = Worker(self.replies, threads, allow_spinning)  # type: ignore[arg-type]
        self.ids = itertools.count(1)
        self.fence = 0  # the largest controller token seen: older ones are refused
        self.specs: dict[str, dict] = {}  # target placement: variant -> load message
        self.states: dict[str, str] = {}  # variant -> replica state
        self.outstanding: Counter[str] = Counter()
        self.version = 0
        self.server: asyncio.Server | None = None
        self._stopped = asyncio.Event()

    def _set(self, variant: str, state: str | None) -> None:
        if state is None:
            self.states.pop(variant, None)
        else:
            self.states[variant] = state
        self.version += 1

    async def hello(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        ip = ray.util.get_node_ip_address()
        if self.server is None:  # the request path: frames over TCP, straight to this actor
            self.server = await asyncio.start_server(self._connection, host=ip, port=0)
        port = self.server.sockets[0].getsockname()[1]
        return {"pid": os.getpid(), "node_id": ctx.get_node_id(), "node_ip": ip, "port": port,
                "kind": local_kind().as_dict(), "threads": self.threads}  # fmt: skip

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One frontend's request stream: ``infer`` and ``cancel`` frames (the local worker's wire format);
        its ids are its own, mapped to this actor's. The deadline arrives in the sender's clock and is
        taken relative to the frame's ``arrival`` stamp (clocks differ between machines)."""
        from infaas.protocol.worker_wire import read_message, write_message

        mine: dict[int, tuple[int, str]] = {}  # the frontend's id -> (this actor's id, variant)

        async def answer(msg: dict) -> None:
            rid = next(self.ids)
            fut = self.replies.expect(rid)
            variant = msg["variant"]
            mine[msg["id"]] = (rid, variant)
            self.outstanding[variant] += 1
            now = time.monotonic()
            deadline = msg.get("deadline")
            try:
                self.worker._infer({**msg, "id": rid, "arrival": now,
                                    "deadline": None if deadline is None else now + deadline - msg["arrival"]})  # fmt: skip
                reply = await fut
            finally:
                self.outstanding[variant] -= 1
                mine.pop(msg["id"], None)
            reply["id"] = msg["id"]
            if not writer.is_closing():
                write_message(writer, reply)

        tasks: set[asyncio.Task] = set()
        try:
            while True:
                msg = await read_message(reader)
                if msg.get("op") == "infer":
                    task = asyncio.ensure_future(answer(msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif msg.get("op") == "cancel" and msg.get("key") in mine:
                    rid, variant = mine[msg["key"]]
                    executor = self.worker.variants.get(variant)
                    if executor is not None:
                        executor.cancel(rid)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def watch(self) -> None:
        """Never returns while the actor lives: the frontend learns of its death from this call."""
        await self._stopped.wait()

    async def placement(self) -> dict:
        return {"version": self.version, "specs": self.specs, "states": self.states}

    def _fenced(self, fence: int | None, op: str) -> dict | None:
        if fence is None:
            return None
        if fence < self.fence:
            return {"ok": False, "kind": "Unavailable", "error": f"{op} refused: controller token {fence} is "
                    f"stale (this worker has seen {self.fence}; another frontend leads now)"}  # fmt: skip
        self.fence = fence
        return None

    async def _control(self, msg: dict) -> dict:
        rid = next(self.ids)
        fut = self.replies.expect(rid)
        self.worker.control.submit(self.worker._control, {**msg, "id": rid})
        return await fut

    async def load(self, msg: dict, artifact: bytes | None, fence: int | None = None) -> dict:
        if (refused := self._fenced(fence, "load")) is not None:
            return refused
        name = msg["variant"]
        try:
            msg = {**msg, "path": str(self._cached(msg, artifact))}
        except Exception as exc:
            return {"ok": False, "kind": "ArtifactCorrupt", "error": str(exc)}
        self.specs[name] = msg
        if self.states.get(name) == "ready":
            return {"ok": True, "result": {"load_time_s": 0.0, "already": True}}
        self._set(name, "loading")
        reply = await self._control({**msg, "op": "load"})
        if reply["ok"]:
            self._set(name, "ready")
        else:
            self.specs.pop(name, None)
            self._set(name, None)
        return reply

    def _cached(self, msg: dict, artifact: bytes | None) -> Path:
        """The artifact on this node's disk (written once per node from the bytes sent, verified)."""
        from infaas.worker.process import verify_artifact

        key = msg.get("key") or Path(msg["path"]).name
        path = self.cache / key[:2] / key
        if not path.exists():
            if artifact is None:
                raise FileNotFoundError(f"artifact {key} is not cached on this node and was not sent")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(artifact)
            os.replace(tmp, path)
        if msg.get("sha256"):
            verify_artifact(str(path), msg["sha256"])
        return path

    async def unload(self, variant: str, drain_s: float, fence: int | None = None) -> dict:
        if (refused := self._fenced(fence, "unload")) is not None:
            return refused
        self.specs.pop(variant, None)
        if variant not in self.states:
            return {"ok": True, "result": {"unloaded": False}}
        self._set(variant, "draining")  # frontends polling stop routing here
        until = time.monotonic() + drain_s
        while self.outstanding[variant] and time.monotonic() < until:
            await asyncio.sleep(0.01)
        self._set(variant, "unloading")
        try:
            return await self._control({"op": "unload", "variant": variant})
        finally:
            self._set(variant, None)

    async def call(self, msg: dict) -> dict:
        """Any other worker op (stats, profile, ping)."""
        return await self._control(msg)


# ---- the frontend's handle ----------------------------------------------------------------------------
_ACTOR_CLASS: Any = None


def actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(WorkerActor)
    return _ACTOR_CLASS


def _dead(exc: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(exc, rex.RayActorError | rex.ActorUnavailableError | rex.WorkerCrashedError)


class RayWorker(LocalWorker):
    """A worker that is a Ray actor, behind the same handle (and the same lifecycle states) as a local
    process. ``manages()`` says whether this frontend runs the controller: only then does it start,
    restart and kill actors; otherwise it attaches to the named actor and mirrors its placement."""

    def __init__(self, name: str, cluster: RayCluster) -> None:
        super().__init__(name, (), start_timeout_s=cluster.start_timeout_s)
        self.cluster = cluster
        self.actor: Any = None
        self.node_id = ""
        self.node_ip = ""
        self.node = "unplaced"
        self.kind: HardwareKind | None = None
        self._watch_task: asyncio.Task | None = None
        self._actor_version = -1
        self.actor_name = f"{cluster.prefix}-{name}"
        self.incarnation = 0
        self._replacing = False  # the actor died: the next spawn starts a new one

    # ---- lifecycle -------------------------------------------------------------------------
    async def _spawn(self) -> None:
        """Attach to the actor named in the store's worker record (another frontend's, or this one's before a
        restart of the frontend); the leader creates a new actor, under a new name, when there is none alive.
        A dead actor's name is never reused (Ray may hold it until it has cleaned up after a lost node)."""
        import ray

        c = self.cluster
        record = c.store.get("worker", self.name) or {}
        actor = None
        if record.get("actor") and not self._replacing:
            try:
                actor = await asyncio.to_thread(ray.get_actor, record["actor"], namespace=c.namespace)  # a GCS call
                await asyncio.wait_for(actor.hello.remote(), 5.0)
                self.actor_name = record["actor"]
            except Exception:
                actor = None
        if actor is None and not c.manages():
            raise Unavailable(f"worker {self.name} has no live actor yet (the controller is replacing it)")
        if actor is None:
            self.incarnation = int(record.get("incarnation", -1)) + 1
            self.actor_name = f"{c.prefix}-{self.name}" + (f"-{self.incarnation}" if self.incarnation else "")
            opts: dict[str, Any] = {"name": self.actor_name, "namespace": c.namespace, "lifetime": "detached",
                                    "num_cpus": c.cores_per_worker, "max_concurrency": 4096, "max_restarts": 0}  # fmt: skip
            if c.memory_mb:
                opts["memory"] = int(c.memory_mb * 2**20)
            log.info("worker %s: starting Ray actor %s (%d CPU)", self.name, self.actor_name, c.cores_per_worker)
            actor = actor_class().options(**opts).remote(c.cores_per_worker, c.allow_spinning, c.cache_dir)
        self._replacing = False
        try:
            hello = await asyncio.wait_for(actor.hello.remote(), self.start_timeout_s)
        except Exception as exc:
            if c.manages():
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            raise Unavailable(f"worker {self.name} (Ray actor {self.actor_name}) did not start within "
                              f"{self.start_timeout_s:g} s: {exc!r} (does any node have {c.cores_per_worker} "
                              "free CPU?)") from exc  # fmt: skip
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(hello["node_ip"], hello["port"]), 10)
        except Exception as exc:
            raise Unavailable(f"worker {self.name}: cannot connect to its actor at {hello['node_ip']}:"
                              f"{hello['port']}: {exc!r}") from exc
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_replies(reader, writer))
        self.actor = actor
        self.pid, self.node_id, self.node_ip = hello["pid"], hello["node_id"], hello["node_ip"]
        self.node = self.node_ip
        k = hello["kind"]
        self.kind = HardwareKind(k["machine"], k["cpu"], tuple(k["flags"]), k["gpu"])
        self.cores = tuple(range(hello["threads"]))
        self.replicas, self._ready = {}, set()
        self._actor_version = -1
        self._watch_task = asyncio.create_task(self._watch(actor))
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
        self._fail_pending(WorkerCrashed(f"worker {self.name} (Ray actor on {self.node_ip}) died ({why}) while "
                                         "serving this request; it is being replaced"))  # fmt: skip
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
        if kill and actor is not None and self.cluster.manages():
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
            adopt = {v for v, s in states.items() if s is ReplicaState.READY and v in specs
                     and v not in self.replicas and v not in self._specs and not self._lock(v).locked()}  # fmt: skip
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
        elif op == "unload":
            ref = actor.unload.remote(message["variant"], message.get("drain_s", 30.0), self.cluster.fence())
        else:
            ref = actor.call.remote(message)
        return (await self._remote(ref, timeout))["result"]

    async def _drain_and_unload(self, variant: str, drain_s: float) -> None:
        """The actor drains every frontend's requests (it counts them all), then unloads."""
        if self.actor is not None:
            await self._call({"op": "unload", "variant": variant, "drain_s": drain_s}, timeout=drain_s + 60)


async def _awaited(ref: Any) -> Any:
    return await ref


def _spec_from_msg(m: dict) -> LoadSpec:
    slope, intercept = m.get("latency_ms") or (0.0, 0.0)
    return LoadSpec(variant=m["variant"], path=m.get("path", ""), threads=m["threads"], max_batch=m["max_batch"],
                    provider=m.get("provider", "cpu"), max_delay_s=m.get("max_delay_s", 0.0),
                    instances=m.get("instances", 1), latency_slope_ms=slope, latency_intercept_ms=intercept,
                    max_queue_s=m.get("max_queue_s"), max_queue_bytes=m.get("max_queue_bytes"),
                    admission=m.get("admission", True), sha256=m.get("sha256", ""),
                    batch_ms=tuple(sorted((int(b), float(ms)) for b, ms in (m.get("batch_ms") or {}).items())))  # fmt: skip


class RayCluster:
    """Workers as Ray actors on a Ray cluster (``ray.init(address)``; None starts a local one).

    ``manages`` (from the composition root) says whether this frontend runs the controller; the worker
    list lives in the metadata store (kind ``worker``), so every frontend sees the same workers.
    """

    def __init__(self, store: Any, *, workers: int = 1, cores_per_worker: int = 1, address: str | None = None,
                 namespace: str = "infaas", memory_mb: float = 0.0, allow_spinning: bool = False,
                 start_timeout_s: float = 60.0, max_workers: int = 0, cache_dir: str | None = None,
                 manages: Callable[[], bool] = lambda: True, fence: Callable[[], int | None] = lambda: None,
                 frontend_id: str = "", sync_s: float = 0.5) -> None:  # fmt: skip
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
        self.kind = local_kind()  # the catalog's kind; each worker reports its own (``RayWorker.kind``)
        self._workers: list[RayWorker] = []
        self._artifacts: dict[str, Any] = {}  # artifact key -> object ref (put once per frontend)
        self._sync_task: asyncio.Task | None = None
        self.deaths: list[dict] = []

    @property
    def workers(self) -> list[RayWorker]:
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

    def record(self, worker: RayWorker) -> None:
        self.store.put("worker", worker.name, None, {"name": worker.name, "actor": worker.actor_name,
                       "node": worker.node_ip, "node_id": worker.node_id, "cores": self.cores_per_worker,
                       "incarnation": worker.incarnation,
                       "kind": worker.kind.as_dict() if worker.kind else None})  # fmt: skip

    def on_death(self, worker: RayWorker, why: str) -> None:
        self.deaths.append({"time": time.time(), "worker": worker.name, "node": worker.node_ip, "why": why})

    def _next_name(self) -> str:
        taken = {w.name for w in self._workers} | {r["name"] for r in self.store.list("worker")}
        return next(f"w{i}" for i in itertools.count() if f"w{i}" not in taken)

    async def add_worker(self) -> RayWorker:
        if not self.manages():
            raise Unavailable("only the frontend that runs the controller adds workers")
        if (why := self.can_add()) is not None:
            raise Unavailable(f"cannot add a worker: {why}")
        worker = RayWorker(self._next_name(), self)
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
            kwargs: dict[str, Any] = {"namespace": self.namespace, "ignore_reinit_error": True,
                                      "log_to_driver": False, "include_dashboard": False}  # fmt: skip
            if self.address:
                kwargs["address"] = self.address
            await asyncio.to_thread(ray.init, **kwargs)
        await self.sync()
        if self.manages():
            while len(self._workers) < self.initial:
                await self.add_worker()
        self._sync_task = asyncio.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
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
                w = RayWorker(name, self)
                try:
                    await w.start()
                except Exception as exc:
                    log.warning("cannot attach to worker %s: %s", name, exc)
                    continue
                kept.append(w)
        self._workers = kept
        for w in self._workers:
            if w.state is WorkerState.RESTARTING and not self.manages():
                await self._reattach(w)
            else:
                await w.mirror()

    async def _reattach(self, w: RayWorker) -> None:
        """A follower's dead handle: the leader replaces the actor (a new name in the worker's record)."""
        with contextlib.suppress(Exception):
            await w._spawn()
            w._set_state(WorkerState.READY, "attached to the replacement actor")

    async def stop(self) -> None:
        """Stop this frontend's handles; kill the actors only when no other frontend is alive."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        others = [f for f in self.store.list("frontend") if f.get("expires", 0) > time.time()
                  and f.get("id") != self.frontend_id]  # fmt: skip
        kill = self.manages() and not others
        await asyncio.gather(*(w.stop(kill=kill) for w in self._workers), return_exceptions=True)
        if kill:
            for w in self._workers:
                self.store.delete("worker", w.name)
