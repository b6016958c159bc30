"""Closed-loop HTTP load generator for KServe v2 endpoints (run as its own process).

Each of C clients keeps one HTTP/1.1 keep-alive connection and sends the next request as soon as
the last answer arrived. Lean on purpose (raw asyncio streams on uvloop, no HTTP library): on a
2-core machine the load generator competes with the server for CPU, so its own cost must be small.

    python bench/loadgen.py --url http://127.0.0.1:8000 --path /v2/models/m/infer \
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
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             "Connection: keep-alive", *headers]  # fmt: skip
    if not any(h.lower().startswith("content-type") for h in headers):
        lines.append("Content-Type: application/octet-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _client(host, port, request, start_at, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= start_at:
                if status == 200:
                    lat.append(t1 - t0)
                else:
                    errors.append(status)
    finally:
        writer.close()


async def run(url: str, path: str, body: bytes, headers: list[str], concurrency: int, duration: float,
              warmup: float) -> dict:  # fmt: skip
    u = urlparse(url)
    request = build_request(u.netloc, path, body, headers)
    now = time.perf_counter()
    start_at, stop_at = now + warmup, now + warmup + duration
    lat: list[float] = []
    errors: list[int] = []
    await asyncio.gather(*(_client(u.hostname, u.port, request, start_at, stop_at, lat, errors)
                           for _ in range(concurrency)))  # fmt: skip
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 2) if lat else None

    return {"concurrency": concurrency, "duration_s": duration, "requests": len(lat), "errors": len(errors),
            "throughput": round(len(lat) / duration, 2), "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "mean_ms": round(sum(lat) / len(lat) * 1000, 2) if lat else None}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body", required=True, help="file with the request body")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with open(args.body, "rb") as f:
        body = f.read()
    result = asyncio.run(run(args.url, args.path, body, args.header, args.concurrency, args.duration,
                             args.warmup))  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
