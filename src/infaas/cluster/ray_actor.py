"""The Ray actor side of the Ray backend (runs in a Ray worker process, on any node): one infaas
worker (:class:`infaas.worker.process.Worker`) behind actor methods for placement, lifecycle and
control calls, and a TCP listener for the request path (the local worker's frames)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from infaas.cluster.base import ReplicaState
from infaas.hardware import local_kind
from infaas.protocol.peer_wire import Listener


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

    def __init__(self, threads: int, allow_spinning: bool, cache_dir: str, wire: dict) -> None:
        from infaas.worker.process import Worker

        self.threads = threads
        self.cache = Path(cache_dir)
        self.replies = _Replies()
        self.worker = Worker(self.replies, threads, allow_spinning)  # type: ignore[arg-type]
        self.ids = itertools.count(1)
        self.fence = 0  # the largest controller token seen: older ones are refused
        self.specs: dict[str, dict] = {}  # target placement: variant -> load message
        self.states: dict[str, str] = {}  # variant -> its ReplicaState value
        self.outstanding: Counter[str] = Counter()
        self.version = 0
        self.wire = wire  # secret, host, ports, max_body_bytes (see RayCluster.wire)
        self.listener: Listener | None = None
        self.port = 0
        self._stopped = asyncio.Event()

    def _set(self, variant: str, state: ReplicaState | None) -> None:
        """Every replica transition of this actor, in one place; frontends mirror ``states`` (the
        enum's values, as they travel through Ray)."""
        if state is None:
            self.states.pop(variant, None)
        else:
            self.states[variant] = state.value
        self.version += 1

    async def hello(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        ip = ray.util.get_node_ip_address()
        if self.listener is None:  # the request path: authenticated frames over TCP, straight to this actor
            self.listener = Listener(
                self.wire["secret"].encode(), self._session, max_body_bytes=self.wire["max_body_bytes"]
            )
            try:
                self.port = await self.listener.start(self.bind, tuple(self.wire.get("ports") or (0, 0)))
            except OSError:
                self.listener = None
                raise
        return {
            "pid": os.getpid(),
            "node_id": ctx.get_node_id(),
            "node_ip": ip,
            "host": ip if self.bind in ("", "0.0.0.0", "::") else self.bind,
            "port": self.port,
            "kind": local_kind().as_dict(),
            "threads": self.threads,
        }

    @property
    def bind(self) -> str:
        """The listener's address: the node's own ``INFAAS_NODE_HOST``, else ``--node-host``, else the
        node's address as Ray knows it."""
        import ray

        return os.environ.get("INFAAS_NODE_HOST") or self.wire.get("host") or ray.util.get_node_ip_address()

    async def wire_stats(self) -> dict:
        """The listener's counts: connections served, peers refused at the handshake, frames rejected."""
        return dict(self.listener.counts) if self.listener else {}

    def _session(self, writer: asyncio.StreamWriter) -> Any:
        """One frontend's request stream: ``infer`` and ``cancel`` messages; its ids are its own, mapped
        to this actor's. The deadline arrives in the sender's clock and is taken relative to the frame's
        ``arrival`` stamp (clocks differ between machines)."""
        mine: dict[int, tuple[int, str]] = {}  # the frontend's id -> (this actor's id, variant)
        assert self.listener is not None
        frames = self.listener.frames
        tasks: set[asyncio.Task] = set()

        async def answer(msg: dict) -> None:
            rid = next(self.ids)
            fut = self.replies.expect(rid)
            variant = msg["variant"]
            mine[msg["id"]] = (rid, variant)
            self.outstanding[variant] += 1
            now = time.monotonic()
            deadline = msg.get("deadline")
            try:
                self.worker.infer(
                    {
                        **msg,
                        "id": rid,
                        "arrival": now,
                        "deadline": None if deadline is None else now + deadline - msg["arrival"],
                    }
                )
                reply = await fut
            finally:
                self.outstanding[variant] -= 1
                mine.pop(msg["id"], None)
            reply["id"] = msg["id"]
            if not writer.is_closing():
                frames.write(writer, reply)

        def on_message(msg: dict) -> None:
            if msg.get("op") == "infer":
                task = asyncio.ensure_future(answer(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif msg.get("op") == "cancel" and msg.get("key") in mine:
                rid, variant = mine[msg["key"]]
                self.worker.cancel(variant, rid)
            elif msg.get("op") == "turned_away":
                self.worker.turned_away(msg["counts"])

        return on_message

    async def watch(self) -> None:
        """Never returns while the actor lives: the frontend learns of its death from this call."""
        await self._stopped.wait()

    async def placement(self) -> dict:
        return {"version": self.version, "specs": self.specs, "states": self.states}

    def _fenced(self, fence: int | None, op: str) -> dict | None:
        if fence is None:
            return None
        if fence < self.fence:
            return {
                "ok": False,
                "kind": "Unavailable",
                "error": f"{op} refused: controller token {fence} is "
                f"stale (this worker has seen {self.fence}; another frontend leads now)",
            }
        self.fence = fence
        return None

    async def _control(self, msg: dict) -> dict:
        rid = next(self.ids)
        fut = self.replies.expect(rid)
        self.worker.submit_control({**msg, "id": rid})
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
        if self.states.get(name) == ReplicaState.READY.value:
            return {"ok": True, "result": {"load_time_s": 0.0, "already": True}}
        self._set(name, ReplicaState.LOADING)
        reply = await self._control({**msg, "op": "load"})
        if reply["ok"]:
            self._set(name, ReplicaState.READY)
        else:
            self.specs.pop(name, None)
            self._set(name, None)
        return reply

    def _cached(self, msg: dict, artifact: bytes | None) -> Path:
        """The artifact on this node's disk (written once per node from the bytes sent, verified)."""
        from infaas.worker.measure import verify_artifact

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
        self._set(variant, ReplicaState.DRAINING)  # frontends polling stop routing here
        until = time.monotonic() + drain_s
        while self.outstanding[variant] and time.monotonic() < until:
            await asyncio.sleep(0.01)
        self._set(variant, ReplicaState.UNLOADING)
        try:
            return await self._control({"op": "unload", "variant": variant})
        finally:
            self._set(variant, None)

    async def profile(self, msg: dict, artifact: bytes | None) -> dict:
        """The ``profile`` op on a model file sent like a load's (cached on this node, verified)."""
        try:
            path = self._cached(msg, artifact)
        except Exception as exc:
            return {"ok": False, "kind": "ArtifactCorrupt", "error": str(exc)}
        return await self._control({**msg, "op": "profile", "path": str(path)})

    async def resize(self, variant: str, instances: int, fence: int | None = None) -> dict:
        if (refused := self._fenced(fence, "resize")) is not None:
            return refused
        reply = await self._control({"op": "resize", "variant": variant, "instances": instances})
        if reply["ok"] and variant in self.specs:  # the target placement: a restart reloads this many
            self.specs[variant] = {**self.specs[variant], "instances": reply["result"]["instances"]}
        return reply

    async def call(self, msg: dict) -> dict:
        """Any other worker op (stats, profile, ping)."""
        return await self._control(msg)


_ACTOR_CLASS: Any = None


def actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(WorkerActor)
    return _ACTOR_CLASS
