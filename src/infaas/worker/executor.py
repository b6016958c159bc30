"""One loaded variant inside a worker process: its batching queue, its runtime instances and the
executor threads that form batches and run them."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from infaas.errors import Cancelled, DeadlineExceeded, Overloaded
from infaas.protocol.shm import Maps
from infaas.protocol.worker_wire import SocketChannel
from infaas.worker.batcher import BatchQueue, Pending
from infaas.worker.runtime import Runtime, infer_checked


class Activity:
    """The batches running in one worker process, per variant: tells a batch that ran alone (no other
    variant's batch overlapped it) from one that time-shared the cores. Only the former says how fast
    a variant runs here; sharing is predicted apart (``policy.select.predict_ms``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._starts: Counter[str] = Counter()
        self._total = 0

    def begin(self, variant: str) -> tuple[bool, int]:
        """A batch of ``variant`` starts; the token :meth:`end` takes."""
        with self._lock:
            alone = not any(n for v, n in self._running.items() if v != variant)
            self._running[variant] += 1
            self._starts[variant] += 1
            self._total += 1
            return alone, self._total - self._starts[variant]

    def end(self, variant: str, token: tuple[bool, int]) -> bool:
        """The batch ended: whether it ran alone throughout (none running at its start, none started since)."""
        alone, others_started = token
        with self._lock:
            self._running[variant] -= 1
            return alone and self._total - self._starts[variant] == others_started


class VariantExecutor:
    """A loaded variant: its batching queue and one executor thread per runtime instance.

    Instances share the queue (as Triton's instance groups do): whichever is idle forms the next
    batch, so two single-threaded instances never wait on each other the way the two halves of
    one two-threaded run do.
    """

    def __init__(
        self,
        name: str,
        runtimes: list[Runtime],
        queue: BatchQueue,
        channel: SocketChannel,
        maps: Maps | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.name = name
        self.activity = activity or Activity()  # shared by the process's variants
        self.maps = maps or Maps()  # where outputs that go to shared memory are written
        self.runtimes = runtimes
        self.queue = queue
        self.channel = channel
        self.cond = threading.Condition()
        self.running = True
        self.served = 0
        self.batches = 0
        self.busy_s = 0.0  # computing online rows (a mixed batch's time is split by rows)
        self.offline_busy_s = 0.0
        self.arrived_rows = self.arrived_requests = 0  # online
        # online requests (rows) the frontends' selection refused while this was busy
        self.turned_away_requests = self.turned_away_rows = 0
        self.offline_rows = 0
        self.completed_rows = 0
        self.refused = 0  # shed at admission
        self.expired = 0  # dropped in the queue at their deadline
        self.cancelled = 0
        self._running_until: dict[int, float] = {}  # instance -> when its batch should end
        self.latencies_ms: list[float] = []  # online, end to end in this worker, since the last stats
        self.threads: list[threading.Thread] = []
        self._instances: dict[int, Runtime] = {}  # index -> its runtime, while it serves
        self._retiring: set[int] = set()  # told to stop after the batch it runs
        self.runtimes = []
        self.grow(runtimes)

    def grow(self, runtimes: list[Runtime]) -> None:
        """More instances (loaded already), each with its thread, sharing the queue."""
        with self.cond:
            for rt in runtimes:
                index = len(self.threads)
                self._instances[index] = rt
                t = threading.Thread(target=self._loop, args=(index, rt), name=f"exec-{self.name}-{index}", daemon=True)
                self.threads.append(t)
                t.start()
            self._sync()

    def shrink(self, instances: int) -> int:
        """Down to ``instances`` (at least one): the newest stop once their running batch is done and
        unload their runtime. Returns how many were told to stop."""
        with self.cond:
            live = sorted(set(self._instances) - self._retiring)
            retire = live[max(1, instances) :]
            self._retiring.update(retire)
            self._sync()
            self.cond.notify_all()
        return len(retire)

    def held(self) -> list[Runtime]:
        """Every runtime still held: the serving instances and those finishing their last batch."""
        with self.cond:
            return list(self._instances.values())

    def _sync(self) -> None:
        """The serving instances, as the queue's work estimate and the stats count them."""
        self.runtimes = [rt for i, rt in sorted(self._instances.items()) if i not in self._retiring]
        self.queue.instances = len(self.runtimes)

    def submit(self, item: Pending) -> None:
        """Queue a request, or refuse it at once when it cannot make its deadline (shedding)."""
        with self.cond:
            if item.offline:
                self.offline_rows += item.rows
            else:
                self.arrived_rows += item.rows
                self.arrived_requests += 1
            now = time.monotonic()
            refusal = self.queue.admit(
                item.rows, item.nbytes, item.deadline, now, item.offline, self._busy_s(now), item.length
            )
            if refusal is None:
                self.queue.put(item, running=bool(self._running_until))
                self.cond.notify()
                return
            self.refused += 1
        if refusal.overloaded:
            self._fail(item, Overloaded(f"{self.name} is overloaded: {refusal.reason}", refusal.retry_after_s))
        else:
            self._fail(
                item,
                DeadlineExceeded(f"request refused by {self.name}: it cannot meet its deadline ({refusal.reason})"),
            )

    def cancel(self, key: int) -> None:
        """The caller gave up: drop the request if it is still queued (a running batch finishes)."""
        with self.cond:
            item = self.queue.cancel(key)
            if item is not None:
                self.cancelled += 1
        if item is not None:
            self._fail(item, Cancelled(f"request cancelled by its caller while queued on {self.name}"))

    def estimate_s(self, rows: int, length: int | None = None) -> float:
        """What admission predicts now for a new online request of ``rows``: until an instance
        frees up, then the queue ahead and its own batch (call with ``cond`` held)."""
        return self._busy_s(time.monotonic()) + self.queue.ahead_s(rows, length, offline=False)

    def _busy_s(self, now: float) -> float:
        """Until an instance is free: 0 if one is idle, else the earliest predicted end of a batch."""
        if len(self._running_until) < len(self.runtimes):
            return 0.0
        return max(0.0, min(self._running_until.values()) - now)

    def stop(self) -> list[Pending]:
        with self.cond:
            self.running = False
            self.cond.notify_all()
            return self.queue.drain()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    def _loop(self, index: int, runtime: Runtime) -> None:
        while True:
            with self.cond:
                while True:
                    if not self.running:
                        return
                    if index in self._retiring:
                        self._retiring.discard(index)
                        del self._instances[index]
                        break
                    now = time.monotonic()
                    formed = self.queue.next(now)
                    self.expired += len(formed.expired)
                    for item in formed.expired:
                        self._fail(
                            item, DeadlineExceeded(f"request dropped by {self.name}: it could not meet its deadline")
                        )
                    if formed.batch:
                        self._running_until[index] = now + self.queue.predict_s(formed.rows, formed.batch[0].length)
                        if len(self.queue):
                            self.cond.notify()  # another idle instance can take the rest
                        break
                    self.cond.wait(formed.wait_s)
            if index not in self._instances:  # retired (shrink): free its runtime, end the thread
                runtime.unload()
                return
            started = time.monotonic()
            try:
                self._run(runtime, formed.batch)
            finally:
                with self.cond:
                    self._running_until.pop(index, None)
                    if len(self.queue):  # backlogged: how fast the queue really drains, replies and all
                        self.queue.observe_backlogged(
                            formed.rows, time.monotonic() - started, length=formed.batch[0].length
                        )

    def _run(self, runtime: Runtime, batch: list[Pending]) -> None:
        start = time.monotonic()
        rows = sum(p.rows for p in batch)
        token = self.activity.begin(self.name)
        try:
            if len(batch) == 1:
                inputs = batch[0].payload
            else:
                inputs = {name: np.concatenate([p.payload[name] for p in batch], axis=0) for name in batch[0].payload}
            outputs = infer_checked(runtime, inputs, rows)
        except Exception as exc:  # a failed batch fails its requests, not the worker
            self.activity.end(self.name, token)
            for item in batch:
                self._fail(item, exc)
            return
        end = time.monotonic()
        alone = self.activity.end(self.name, token)
        compute_ns = int((end - start) * 1e9)
        offline = sum(p.rows for p in batch if p.offline)
        with self.cond:
            if alone:  # the one learned correction: admission here, and the selection's (sent with each answer)
                self.queue.observe(rows, end - start, length=batch[0].length)
            scale = self.queue.scale
            self.batches += 1
            self.served += len(batch)
            self.busy_s += (end - start) * (rows - offline) / rows
            self.offline_busy_s += (end - start) * offline / rows
            self.completed_rows += rows
            if len(self.latencies_ms) < 4096:
                self.latencies_ms.extend((end - p.arrival) * 1000 for p in batch if not p.offline)
        offset = 0
        for pos, item in enumerate(batch):
            part = {k: v[offset : offset + item.rows] for k, v in outputs.items()}
            offset += item.rows
            if item.out:
                try:
                    part = self._place(part, item.out)
                except Exception as exc:  # a span too small for its output fails that request alone
                    self._fail(item, exc)
                    continue
            self.channel.send(
                {
                    "id": item.key,
                    "ok": True,
                    "outputs": part,
                    "queue_ns": int((start - item.arrival) * 1e9),
                    "compute_ns": compute_ns,
                    "batch_size": rows,
                    "batch_pos": pos,
                    "scale": scale,
                }
            )

    def _place(self, part: dict[str, np.ndarray], spans: dict) -> dict:
        """Write the outputs that go to shared memory there; what travels back is where they lie."""
        return {k: self.maps.write(spans[k], v) if k in spans and v.dtype != object else v for k, v in part.items()}

    def _fail(self, item: Pending, exc: BaseException) -> None:
        self.channel.send(
            {
                "id": item.key,
                "ok": False,
                "error": str(exc) or repr(exc),
                "kind": type(exc).__name__,
                "retry_after_s": getattr(exc, "retry_after_s", None),
            }
        )
