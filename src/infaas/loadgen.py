"""HTTP load generators for KServe v2 endpoints: closed-loop (benchmarks) and open-loop ramps.

Closed loop: each of C clients keeps one HTTP/1.1 keep-alive connection and sends the next request
as soon as the last answer arrived. Open loop (:func:`ramp`): requests arrive at a set rate per
stage whether or not earlier ones were answered, as real users do, so an overloaded server sees
its queue grow. Lean on purpose (raw asyncio streams, no HTTP library): on a 2-core machine the
load generator competes with the server for CPU, so its own cost must be small.

    python -m infaas.loadgen --url http://127.0.0.1:8000 --path /v2/models/m/infer \
        --body req.bin --header 'Inference-Header-Content-Length: 123' -c 32 -d 10 --warmup 2
Prints one JSON object: requests, errors, throughput (req/s), latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlparse


def build_request(host: str, path: str, body: bytes, headers: list[str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        *headers,
    ]
    if not any(h.lower().startswith("content-type") for h in headers):
        lines.append("Content-Type: application/octet-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection, read the whole answer; returns the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _client(host, port, request, start_at, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            status = await _exchange(reader, writer, request)
            t1 = time.perf_counter()
            if t0 >= start_at:
                if status == 200:
                    lat.append(t1 - t0)
                else:
                    errors.append(status)
    finally:
        writer.close()


async def run(
    url: str, path: str, body: bytes, headers: list[str], concurrency: int, duration: float, warmup: float
) -> dict:
    u = urlparse(url)
    request = build_request(u.netloc, path, body, headers)
    now = time.perf_counter()
    start_at, stop_at = now + warmup, now + warmup + duration
    lat: list[float] = []
    errors: list[int] = []
    await asyncio.gather(
        *(_client(u.hostname, u.port, request, start_at, stop_at, lat, errors) for _ in range(concurrency))
    )
    return {"concurrency": concurrency, **_summary(lat, len(errors), duration)}


def _summary(lat: list[float], errors: int, duration: float) -> dict:
    lat = sorted(lat)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 2) if lat else None

    return {
        "duration_s": duration,
        "requests": len(lat),
        "errors": errors,
        "throughput": round(len(lat) / duration, 2),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": round(sum(lat) / len(lat) * 1000, 2) if lat else None,
    }


class _Pool:
    """Keep-alive connections for open-loop load: an idle one, or a new one up to ``limit`` (past
    that, callers wait for one to be given back)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.freed = asyncio.Condition()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.limit:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            await self.drop(None)
            raise

    async def give(self, conn) -> None:
        async with self.freed:
            self.idle.append(conn)
            self.freed.notify()

    async def drop(self, conn) -> None:
        """A connection that failed or was given up on: closed, and its slot freed."""
        if conn is not None:
            conn[1].close()
        async with self.freed:
            self.opened -= 1
            self.freed.notify()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def ramp(
    url: str,
    path: str,
    body: bytes,
    headers: list[str],
    stages: list[tuple[float, float]],
    max_connections: int = 256,
    slo_ms: float | None = None,
    records: list[tuple[int, float, int, float]] | None = None,
    timeout_s: float | None = None,
    reported: list[tuple[int, float, float, str]] | None = None,
) -> list[dict]:
    """Open-loop load: for each (requests per second, seconds) stage, send at that rate, evenly spaced.

    Each request takes an idle keep-alive connection (or opens one, up to ``max_connections``;
    past that, arrivals wait for one, which the stage's latencies then show). Returns per-stage
    summaries of the requests that *arrived* in each stage, with ``slo_violations`` when ``slo_ms``.
    ``records``, when given, receives one ``(stage, arrival s since the start, status, latency s)``
    per request (status -1: a connection error; 0: no answer within ``timeout_s``, after which the
    client gives up and closes its connection, as a real caller with a timeout does).
    ``reported``, when given, receives ``(stage, arrival, the server's own server_ms, error)`` per answer
    (the answers are then parsed: a little more of the client's CPU): ``server_ms`` for status 200 (NaN
    otherwise), and for any other status the error the server gave (empty for a 200).
    """
    began = time.perf_counter()
    u = urlparse(url)
    request = build_request(u.netloc, path, body, headers)
    pool = _Pool(u.hostname, u.port, max_connections)
    results: list[tuple[list[float], list[int]]] = [([], []) for _ in stages]
    tasks: set[asyncio.Task] = set()

    async def one(stage: int) -> None:
        t0 = time.perf_counter()
        conn = None
        try:
            conn = await pool.take()
            if reported is None:
                status = await asyncio.wait_for(_exchange(*conn, request), timeout_s)
            else:
                status, doc = await asyncio.wait_for(_exchange_full(*conn, request), timeout_s)
                reported.append((stage, t0 - began, *_account(status, doc)))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            gave_up = isinstance(exc, TimeoutError)
            if conn is not None:
                await pool.drop(conn)
            results[stage][1].append(0 if gave_up else getattr(exc, "errno", None) or -1)
            if records is not None:
                records.append((stage, t0 - began, 0 if gave_up else -1, time.perf_counter() - t0))
            return
        took = time.perf_counter() - t0
        (results[stage][0] if status == 200 else results[stage][1]).append(took if status == 200 else status)
        if records is not None:
            records.append((stage, t0 - began, status, took))
        await pool.give(conn)

    start = time.perf_counter()
    for i, (rate, seconds) in enumerate(stages):
        n = int(rate * seconds)
        for k in range(n):
            at = start + k / rate
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        start += seconds
        if (delay := start - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
    if tasks:
        await asyncio.gather(*tasks)
    pool.close()
    out = []
    for (rate, seconds), (lat, errors) in zip(stages, results, strict=True):
        row = {"rate": rate, **_summary(lat, len(errors), seconds)}
        if slo_ms is not None:
            row["slo_violations"] = sum(t * 1000 > slo_ms for t in lat) + len(errors)
        out.append(row)
    return out


def _account(status: int, doc: dict) -> tuple[float, str]:
    """The server's own account of an answer: its ``server_ms`` (a 200), or its error (NaN, the error)."""
    if status == 200:
        return float((doc.get("parameters") or {}).get("server_ms", "nan")), ""
    return float("nan"), str(doc.get("error", ""))


async def _exchange_full(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict]:
    """Like :func:`_exchange`, returning the status and the answer's JSON (the header only, when
    the answer uses the binary tensor extension; ``{}`` when it is not JSON)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length, json_len = 0, None
    for line in head.split(b"\r\n"):
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line[15:])
        elif low.startswith(b"inference-header-content-length:"):
            json_len = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    try:
        doc = json.loads(body[:json_len] if json_len is not None else body)
    except ValueError:
        doc = {}
    return int(head[9:12]), doc if isinstance(doc, dict) else {}


async def replay(
    url: str, requests: list[tuple[float, str, bytes]], max_connections: int = 256, timeout_s: float = 30.0
) -> list[tuple[str, float, int, float, dict]]:
    """Open loop from a trace: each ``(t_s, key, request bytes)`` is sent at ``t_s`` seconds after
    the start (built with :func:`build_request`), whatever happened to earlier ones. Returns, per
    request, ``(key, t_s, status, latency s, answer JSON)``; status -1 is a connection error, 0 no
    answer within ``timeout_s`` (the client gives up and closes its connection)."""
    u = urlparse(url)
    pool = _Pool(u.hostname, u.port, max_connections)
    out: list[tuple[str, float, int, float, dict]] = []

    async def one(t_s: float, key: str, request: bytes) -> None:
        t0 = time.perf_counter()
        conn = None
        try:
            conn = await pool.take()
            status, doc = await asyncio.wait_for(_exchange_full(*conn, request), timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            if conn is not None:
                await pool.drop(conn)
            out.append(
                (
                    key,
                    t_s,
                    0 if isinstance(exc, TimeoutError) else -1,
                    time.perf_counter() - t0,
                    {"error": f"{type(exc).__name__}: {exc}"},
                )
            )
            return
        out.append((key, t_s, status, time.perf_counter() - t0, doc))
        await pool.give(conn)

    tasks = []
    start = time.perf_counter()
    for t_s, key, request in requests:
        if (delay := start + t_s - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(t_s, key, request)))
    await asyncio.gather(*tasks)
    pool.close()
    return out


async def run_grpc(target: str, method: str, message: bytes, concurrency: int, duration: float, warmup: float) -> dict:
    """Closed loop over gRPC: ``concurrency`` callers on one HTTP/2 channel, each sending the next
    unary call (``message``: the serialized request, sent as is, no protobuf work in the client)
    when the last one answered. An error status counts as an error."""
    import grpc

    def same(b: bytes) -> bytes:
        return b

    now = time.perf_counter()
    start_at, stop_at = now + warmup, now + warmup + duration
    lat: list[float] = []
    errors: list[int] = []
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=opts) as channel:
        call = channel.unary_unary(method, request_serializer=same, response_deserializer=same)

        async def caller() -> None:
            while (t0 := time.perf_counter()) < stop_at:
                try:
                    await call(message, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    if t0 >= start_at:
                        errors.append(exc.code().value[0])
                    continue
                if t0 >= start_at:
                    lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"concurrency": concurrency, **_summary(lat, len(errors), duration)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="http://host:port, or host:port with --grpc")
    p.add_argument("--path", required=True, help="the HTTP path, or the gRPC method (/package.Service/Method)")
    p.add_argument("--grpc", action="store_true", help="unary gRPC calls; --body holds the serialized request")
    p.add_argument("--body", required=True, help="file with the request body")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    args = p.parse_args()
    try:
        import uvloop

        if not args.grpc:  # grpc.aio runs on asyncio's own loop
            uvloop.install()
    except ImportError:
        pass
    with open(args.body, "rb") as f:
        body = f.read()
    if args.grpc:
        result = asyncio.run(run_grpc(args.url, args.path, body, args.concurrency, args.duration, args.warmup))
    else:
        result = asyncio.run(run(args.url, args.path, body, args.header, args.concurrency, args.duration, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
