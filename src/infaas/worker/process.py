"""The worker process: owns a slice of CPU cores, hosts loaded variants, one batching queue each.

Started by a cluster backend as ``python -m infaas.worker --fd N --cores 0,1``
with one end of a socketpair. Threads: the main thread receives messages; each
loaded variant has an executor thread that forms batches and runs the runtime;
loads and unloads run on a side thread so inference keeps flowing meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from infaas.errors import InvalidInput, NotFound, Unavailable
from infaas.protocol.shm import Maps, ShmTensor
from infaas.protocol.worker_wire import SocketChannel
from infaas.registry.types import axis_length, runtime_of
from infaas.worker.batcher import BatchQueue, Pending, preferred_batch
from infaas.worker.executor import Activity, VariantExecutor
from infaas.worker.measure import (
    answers,
    calibrate,
    peak_rss_mb,
    resize_axis,
    rss_mb,
    trim,
    verify_artifact,
    warm_up,
)
from infaas.worker.runtime import OnnxRuntime, Runtime, infer_checked, make_runtime

_MAX_TIMED_RUNS = 2000  # the most runs one batch size gets towards its time floor
# How long a thread that wants the GIL waits before the holder is asked to drop it (CPython: 5 ms).
# A sub-ms request crosses two threads here (the receiver, then its variant's executor) while other
# variants' executors run Python between their batches; at 5 ms each hop could wait that long
# behind them. bench/workload on an AVX2 EPYC (Zen 1), two runs each: the selection's error
# against the objective, p90, 0.30-0.32 at 5 ms, 0.25 at 0.5 ms (docs/benchmarks.md, issue 33).
GIL_SWITCH_S = 0.0005


class Worker:
    def __init__(self, channel: SocketChannel, threads: int, allow_spinning: bool) -> None:
        self.channel = channel
        self.threads = threads
        self.allow_spinning = allow_spinning
        self.variants: dict[str, VariantExecutor] = {}
        self.specs: dict[str, dict] = {}  # each loaded variant's load message (a resize loads more alike)
        self.control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control")
        self.maps = Maps()  # the shared-memory objects requests' tensors lie in (protocol.shm)
        self.activity = Activity()  # which variants' batches run at once (a batch alone says its speed)
        self.started = time.time()
        sys.setswitchinterval(GIL_SWITCH_S)

    def serve(self) -> None:
        self.channel.send({"id": 0, "ok": True, "hello": {"pid": os.getpid(), "threads": self.threads}})
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, ConnectionError):
                return
            op = msg.get("op")
            if op == "infer":
                self.infer(msg)
            elif op == "cancel":
                self.cancel(msg["variant"], msg["key"])
            elif op == "forget_shm":  # the frontend unregistered this object's regions
                self.maps.forget(msg["key"])
            elif op == "turned_away":
                self.turned_away(msg["counts"])
            elif op == "shutdown":
                return
            else:
                self.submit_control(msg)

    def cancel(self, variant: str, key: int) -> None:
        """Drop request ``key`` if it is still queued (its caller gave up)."""
        executor = self.variants.get(variant)
        if executor is not None:
            executor.cancel(key)

    def turned_away(self, counts: dict[str, list[int]]) -> None:
        """Requests (and their rows) a frontend's selection refused because these variants here were
        busy: demand they did not carry, reported beside the arrivals for the autoscaler."""
        for variant, (requests, rows) in counts.items():
            executor = self.variants.get(variant)
            if executor is not None:
                with executor.cond:
                    executor.turned_away_requests += int(requests)
                    executor.turned_away_rows += int(rows)

    def submit_control(self, msg: dict) -> None:
        """Run a control op (load, unload, stats, profile, predict, ping) on the control thread; its
        reply goes to the channel."""
        self.control.submit(self._control, msg)

    def infer(self, msg: dict) -> None:
        """Queue one request with its variant's executor; the reply goes to the channel."""
        executor = self.variants.get(msg["variant"])
        if executor is None:
            self.channel.send(
                {
                    "id": msg["id"],
                    "ok": False,
                    "kind": "ReplicaGone",
                    "error": f"variant {msg['variant']} is not loaded on this worker",
                }
            )
            return
        try:  # tensors in shared memory are read in place
            inputs = {k: self.maps.array(v) if isinstance(v, ShmTensor) else v for k, v in msg["inputs"].items()}
        except InvalidInput as exc:
            self.channel.send({"id": msg["id"], "ok": False, "kind": "InvalidInput", "error": str(exc)})
            return
        executor.submit(
            Pending(
                key=msg["id"],
                rows=msg["rows"],
                arrival=msg.get("arrival") or time.monotonic(),
                shape_key=tuple((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()),
                deadline=msg.get("deadline"),
                drop_late=msg.get("drop_late", True),
                payload=inputs,
                offline=msg.get("offline", False),
                nbytes=sum(v.nbytes for v in inputs.values()),
                length=axis_length(
                    self.specs[msg["variant"]].get("axis") or "", {k: v.shape for k, v in inputs.items()}
                ),
                out=msg.get("out"),
            )
        )

    def _control(self, msg: dict) -> None:
        try:
            result = getattr(self, "_op_" + msg["op"])(msg)
            self.channel.send({"id": msg["id"], "ok": True, "result": result})
        except Exception as exc:
            self.channel.send(
                {
                    "id": msg["id"],
                    "ok": False,
                    "kind": type(exc).__name__,
                    "error": f"{exc}",
                    "trace": traceback.format_exc(limit=5),
                }
            )

    def _op_load(self, msg: dict) -> dict:
        name = msg["variant"]
        if name in self.variants:
            return {"load_time_s": 0.0, "already": True}
        if msg.get("sha256"):
            verify_artifact(msg["path"], msg["sha256"])
        instances = max(1, msg.get("instances", 1))
        threads = max(1, min(msg.get("threads", self.threads), self.threads // instances))
        runtimes = self._runtimes(msg, instances, threads)
        max_batch = msg.get("max_batch", 16)
        profiled = {int(b): ms / 1000 for b, ms in (msg.get("batch_ms") or {}).items() if int(b) <= max_batch}
        if profiled and instances == 1:  # measured on this kind with these threads: warm up, no sweep
            timings, timed = profiled, "in its profile"
            warm_up(runtimes[0])
        else:
            timings = calibrate(runtimes[0], max_batch) if msg.get("calibrate", True) else {}
            timed = "measured at load"
        preferred = preferred_batch(timings, max_batch)
        from infaas.registry.types import Profile, linear_fit

        slope, intercept = msg.get("latency_ms") or (0.0, 0.0)
        if not (slope or intercept) and timings:  # no profile yet: fit the calibration runs
            slope, intercept = linear_fit(sorted(timings), [timings[b] * 1000 for b in sorted(timings)])
        # batch times as this worker runs them: its calibration at load (this process, these threads),
        # else the profile's fit; never zero (Profile.predict_ms)
        model = Profile(
            variant=name,
            hardware="",
            fit_slope_ms=slope,
            fit_intercept_ms=intercept,
            latency_p50_ms={b: t * 1000 for b, t in timings.items()},
            axis=msg.get("axis") or "",
            axis_latency_ms={int(n): ms for n, ms in (msg.get("axis_ms") or {}).items()},
        )
        queue = BatchQueue(
            preferred,
            max_delay_s=msg.get("max_delay_s", 0.0),
            predict_s=lambda rows: model.predict_ms(rows) / 1000,
            slo_wait=True,
            max_wait_s=msg.get("max_queue_s"),
            max_bytes=msg.get("max_queue_bytes"),
            admission=msg.get("admission", True),
            instances=instances,
            axis_factor=model.axis_factor,
        )
        for runtime in runtimes:  # what the calibration's large batches held goes back to the system
            runtime.release_memory()
        trim()
        self.variants[name] = VariantExecutor(name, runtimes, queue, self.channel, self.maps, self.activity)
        self.specs[name] = msg
        return {
            "load_time_s": sum(r.load_time_s for r in runtimes) / instances,
            "instances": instances,
            "threads": runtimes[0].threads,
            "preferred_batch": preferred,
            "timed": timed,
            "batch_ms": {b: round(t * 1000, 3) for b, t in timings.items()},
        }

    def _runtimes(self, msg: dict, count: int, threads: int) -> list[Runtime]:
        """``count`` loaded runtime instances of the artifact a load message names."""
        runtimes = []
        for _ in range(count):
            runtime = make_runtime(
                msg["path"],
                msg.get("format", "onnx-fp32"),
                threads=threads,
                provider=msg.get("provider", "cpu"),
                allow_spinning=self.allow_spinning,
                cache_dir=msg.get("cache_dir") or None,
                options=msg.get("options"),
            )
            runtime.load()
            runtimes.append(runtime)
        return runtimes

    def _op_resize(self, msg: dict) -> dict:
        """Run ``instances`` runtime instances of a loaded variant: new ones load (same artifact and
        threads) and share its queue; surplus ones finish their running batch, then unload."""
        name, want = msg["variant"], max(1, int(msg["instances"]))
        executor = self.variants.get(name)
        if executor is None:
            raise NotFound(f"variant {name} is not loaded on this worker")
        have, per = len(executor.runtimes), executor.runtimes[0].threads
        if want * per > self.threads:  # a bound: instances never oversubscribe this worker's cores
            raise InvalidInput(
                f"{want} instance(s) of {name} at {per} thread(s) each need {want * per} cores; "
                f"this worker has {self.threads}"
            )
        began = time.monotonic()
        if want > have:
            executor.grow(self._runtimes(self.specs[name], want - have, per))
        elif want < have:
            executor.shrink(want)
            trim()
        return {"instances": len(executor.runtimes), "was": have, "load_time_s": time.monotonic() - began}

    def _op_unload(self, msg: dict) -> dict:
        executor = self.variants.pop(msg["variant"], None)
        self.specs.pop(msg["variant"], None)
        if executor is None:
            return {"unloaded": False}
        for item in executor.stop():
            executor._fail(item, Unavailable(f"variant {executor.name} was unloaded from this worker"))
        executor.join(timeout=30)
        for runtime in executor.held():
            runtime.unload()
        trim()
        return {"unloaded": True}

    def _op_stats(self, msg: dict) -> dict:
        """Cumulative counters (the caller takes differences) and the latencies since the last call."""
        variants = {}
        for name, e in list(self.variants.items()):
            with e.cond:
                lat, e.latencies_ms = e.latencies_ms, []
                variants[name] = {
                    "queued": len(e.queue),
                    "queued_rows": e.queue.rows_queued,
                    "served": e.served,
                    "batches": e.batches,
                    "busy_s": e.busy_s,
                    "offline_busy_s": e.offline_busy_s,
                    "instances": len(e.runtimes),
                    "refused": e.refused,
                    "expired": e.expired,
                    "cancelled": e.cancelled,
                    "scale": round(e.queue.scale, 3),
                    "backlog_scale": round(e.queue.backlog_scale, 3),
                    # what admission predicts now for one more row (queued work included): the
                    # estimate the selection's must agree with (tests/integration/test_agreement.py)
                    "admit_ms": round(e.estimate_s(1) * 1000, 4),
                    "arrived_rows": e.arrived_rows,
                    "arrived_requests": e.arrived_requests,
                    "turned_away_rows": e.turned_away_rows,
                    "turned_away_requests": e.turned_away_requests,
                    "offline_rows": e.offline_rows,
                    "completed_rows": e.completed_rows,
                    "p50_ms": float(np.percentile(lat, 50)) if lat else None,
                    "p99_ms": float(np.percentile(lat, 99)) if lat else None,
                }
        return {
            "pid": os.getpid(),
            "rss_mb": rss_mb(),
            "uptime_s": time.time() - self.started,
            "time": time.monotonic(),
            "cpu_s": sum(os.times()[:2]),
            "cores": self.threads,
            "switch_ms": sys.getswitchinterval() * 1000,
            "variants": variants,
        }

    def _op_profile(self, msg: dict) -> dict:
        """Measure one (artifact, threads) configuration in this process: load time, memory, latency at
        each batch size (every run, after warm-up), batch-1 latency over a dynamic axis when asked,
        and, when ``evaluate`` names the task's metric, the answers the quality estimate needs."""
        import onnxruntime  # noqa: F401  (imported before the baseline, so only the variant is counted)

        fmt = msg.get("format", "onnx-fp32")
        with contextlib.suppress(ImportError):  # (likewise; not installed: the load says so)
            if runtime_of(fmt)[0] == "openvino":
                import openvino  # noqa: F401
            elif runtime_of(fmt)[0] == "pytorch":
                import torch  # noqa: F401
                import torch._inductor  # noqa: F401  (2 s on its own: AOTInductor's packages load through it)
        rss_before = rss_mb()
        runtime = make_runtime(
            msg["path"],
            fmt,
            threads=min(msg["threads"], self.threads),
            provider=msg.get("provider", "cpu"),
            allow_spinning=self.allow_spinning,
            options=msg.get("options"),
        )
        runtime.load()
        rss_loaded = rss_mb()
        inputs: dict[str, np.ndarray] = msg["inputs"]
        n = len(next(iter(inputs.values())))

        def timed(x: dict[str, np.ndarray], rows: int) -> list[float]:
            for _ in range(msg.get("warmup", 2)):
                infer_checked(runtime, x, rows)
            # at least ``repeats`` runs, and more until ``min_time_ms`` is spent (capped): a model that
            # answers in microseconds gets enough runs that one scheduler hiccup cannot be its median
            runs: list[float] = []
            repeats, min_ms = msg.get("repeats", 10), msg.get("min_time_ms", 0.0)
            while len(runs) < repeats or (sum(runs) < min_ms and len(runs) < _MAX_TIMED_RUNS):
                t0 = time.perf_counter()
                infer_checked(runtime, x, rows)
                runs.append((time.perf_counter() - t0) * 1000)
            return runs

        latency: dict[int, list[float]] = {}
        for batch in msg["batches"]:
            idx = np.arange(batch) % n
            latency[batch] = timed({k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}, batch)
        axis_latency: dict[int, float] = {}
        if msg.get("axis"):  # {input name: dimension} of one dynamic axis, and the sizes to time
            dims, sizes = msg["axis"]["dims"], msg["axis"]["sizes"]
            for size in sizes:
                x = {k: resize_axis(v[:1], dims[k], size) if k in dims else v[:1] for k, v in inputs.items()}
                axis_latency[size] = float(np.median(timed(x, 1)))
        result = {"load_time_s": runtime.load_time_s, "latency_ms": latency, "axis_latency_ms": axis_latency}
        metric = msg.get("evaluate")
        best = max(b / float(np.median(runs)) * 1000 for b, runs in latency.items())
        if metric and best < msg.get("evaluate_min_throughput", 0.0):
            result["not_evaluated"] = (
                f"not evaluated: {best:.0f} rows/s at its best batch, under the "
                f"{msg['evaluate_min_throughput']:.0f} it would need to beat its parent "
                "(half its parent's throughput)"
            )
        elif metric:
            merged = self._answers(runtime, inputs, max(msg["batches"]))
            result.update(answers(merged, msg["signature"], metric))
        runtime.unload()
        result["memory_mb"] = max(rss_loaded, peak_rss_mb()) - rss_before  # weights + arena at its peak
        return result

    @staticmethod
    def _answers(runtime: Runtime, inputs: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
        n = len(next(iter(inputs.values())))
        outs: dict[str, list] = {}
        for start in range(0, n, chunk):
            part = infer_checked(
                runtime, {k: v[start : start + chunk] for k, v in inputs.items()}, min(chunk, n - start)
            )
            for k, v in part.items():
                outs.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in outs.items()}

    def _op_predict(self, msg: dict) -> dict:
        """Top-1 answers of a model file on the given inputs, in chunks (accuracy at registration)."""
        from infaas.registry.onnxinfo import predicted_labels

        runtime = OnnxRuntime(
            msg["path"], threads=min(msg.get("threads", 1), self.threads), allow_spinning=self.allow_spinning
        )
        runtime.load()
        try:
            inputs: dict[str, np.ndarray] = msg["inputs"]
            n, chunk = len(next(iter(inputs.values()))), msg.get("chunk", 256)
            labels = []
            for start in range(0, n, chunk):
                rows = min(chunk, n - start)
                out = infer_checked(runtime, {k: v[start : start + chunk] for k, v in inputs.items()}, rows)
                labels.append(np.asarray(predicted_labels(out, msg["signature"])))
            return {"predictions": np.concatenate(labels) if labels else np.empty(0, np.int64)}
        finally:
            runtime.unload()

    def _op_ping(self, msg: dict) -> dict:
        return {"pid": os.getpid()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="infaas-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--cores", default="")
    parser.add_argument("--allow-spinning", action="store_true")
    args = parser.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",") if c != ""]
    if cores:
        os.sched_setaffinity(0, cores)
    threads = len(cores) or len(os.sched_getaffinity(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the frontend decides when we stop
    sock = socket.socket(fileno=args.fd)
    worker = Worker(SocketChannel(sock), threads, args.allow_spinning)
    try:
        worker.serve()
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
