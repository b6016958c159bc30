"""The frontend's CPU per JSON request, with numeric ``data`` cut out of the JSON text and read by
NumPy (``infaas.protocol.json_tensors``) and with the whole body parsed by orjson (the path before),
side by side in one run.

1. Decoding alone, in this process: ``decode_request`` and the tensors' decoding, CPU time per body,
   for a digits request (16x64 FP32, as ``bench/overload`` sends; under the cut's threshold), a
   256x256x3 UINT8 image (the EfficientNet-Lite zoo's input, 196,608 bytes as binary) and the same
   image as FP32 in [0, 1], both nested as ``tolist()`` writes them. Rounds alternate the two paths;
   medians.
2. End to end: ``infaas serve`` (one 1-core worker, digits-conv, max batch 16) started twice, with
   the cut turned off (``INFAAS_JSON_CUT_MIN_BYTES`` out of reach) and forced on for every body
   (``0``); sequential JSON requests of 16x64 whole numbers; the server process's own CPU time (its
   workers are other processes) per request: how much of the frontend's cost the tensor's decoding is.

    python bench/json_tensors/run.py [--requests 400]
Prints a table and writes bench/results/json_tensors.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "overload"))

from run import PATH, Server, body  # noqa: E402  (bench/overload/run.py)

from infaas.hardware import local_kind  # noqa: E402
from infaas.protocol import codec, json_tensors  # noqa: E402
from infaas.protocol.types import materialize  # noqa: E402
from infaas.zoo import digits  # noqa: E402

OFF = str(1 << 40)  # a threshold no body reaches: the whole body goes to orjson
DEFAULT = json_tensors.MIN_BYTES


def image_body(datatype: str) -> bytes:
    img = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    data = img.tolist() if datatype == "UINT8" else (img.astype(np.float32) / 255).tolist()  # FP32: fractions
    return orjson.dumps({"inputs": [{"name": "image", "datatype": datatype, "shape": list(img.shape), "data": data}]})


def decode_cpu_us(data: bytes, cut: bool, n: int) -> float:
    """CPU µs per decode of ``data`` (header and tensors), over ``n`` decodes."""
    json_tensors.MIN_BYTES = DEFAULT if cut else int(OFF)
    t0 = time.process_time()
    for _ in range(n):
        req = codec.decode_request(data, None, "m", None, 1 << 24)
        materialize(req.inputs)
    return (time.process_time() - t0) / n * 1e6


def decoding(rounds: int = 7) -> list[dict]:
    rows = []
    bodies = (
        ("digits 16x64 FP32", body(), 400),
        ("digits 16x64 FP32, whole", whole_body(), 400),
        ("image 256x256x3 UINT8", image_body("UINT8"), 8),
        ("image 256x256x3 FP32 in [0, 1]", image_body("FP32"), 4),
        ("image 256x256x3 FP32, whole", image_body("UINT8").replace(b'"UINT8"', b'"FP32"'), 8),
    )
    bodies += (("digits 256x64 FP32", batch_body(), 40),)
    for name, data, n in bodies:
        full, cut = [], []
        for _ in range(rounds):
            full.append(decode_cpu_us(data, False, n))
            cut.append(decode_cpu_us(data, True, n))
        f, c = statistics.median(full), statistics.median(cut)
        rows.append({"body": name, "bytes": len(data), "full_parse_us": f, "cut_us": c, "ratio": c / f})
    json_tensors.MIN_BYTES = DEFAULT
    return rows


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks of 10 ms


def batch_body(rows: int = 256) -> bytes:
    """A batch of digits rows, nested as ``tolist()`` writes them (over the cut's threshold)."""
    x, _ = digits.sample_inputs(rows)
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": x.tolist()}]})


def whole_body() -> bytes:
    """The digits request with its pixel values (0..16) written as whole numbers, nested: a body the cut takes."""
    x, _ = digits.sample_inputs(16)
    data = x.astype(np.int64).tolist()
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 64], "data": data}]})


def end_to_end(data_dir: Path, requests: int, rounds: int = 3) -> dict:
    payload = whole_body()
    per: dict[str, list[float]] = {"full_parse": [], "cut": []}
    for _ in range(rounds):
        for key, env in (
            ("full_parse", {"INFAAS_JSON_CUT_MIN_BYTES": OFF}),
            ("cut", {"INFAAS_JSON_CUT_MIN_BYTES": "0"}),
        ):
            server = Server(data_dir, 60.0, True, env=env)
            try:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    for _ in range(50):  # warm up
                        c.post(PATH, content=payload, headers={"content-type": "application/json"})
                    before = server_cpu_s(server.proc.pid)
                    for _ in range(requests):
                        r = c.post(PATH, content=payload, headers={"content-type": "application/json"})
                        assert r.status_code == 200, r.text
                    per[key].append((server_cpu_s(server.proc.pid) - before) / requests * 1e6)
            finally:
                server.stop()
    f, c = statistics.median(per["full_parse"]), statistics.median(per["cut"])
    return {
        "body": f"digits 16x64 FP32, whole numbers ({len(payload)} B)",
        "requests": requests,
        "full_parse_us": f,
        "cut_us": c,
        "ratio": c / f,
        "runs": per,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=400)
    args = p.parse_args()
    cpu = f"{local_kind().cpu} ({', '.join(local_kind().flags)})"
    print(f"CPU: {cpu}", flush=True)
    rows = decoding()
    for r in rows:
        print(
            f"decode {r['body']:<24} {r['bytes']:>8} B  full parse {r['full_parse_us']:9.1f} µs  cut {r['cut_us']:9.1f} µs  {r['ratio']:.2f}x",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "heavy"
        print("registering and profiling digits-conv (quick) ...", flush=True)
        digits.prepare_heavy(data_dir)
        e2e = end_to_end(data_dir, args.requests)
    print(
        f"server CPU per request ({e2e['body']}): full parse {e2e['full_parse_us']:.0f} µs, cut {e2e['cut_us']:.0f} µs, "
        f"{e2e['ratio']:.2f}x",
        flush=True,
    )
    out = ROOT / "bench" / "results" / "json_tensors.json"
    out.write_text(json.dumps({"cpu": cpu, "decode": rows, "server": e2e}, indent=1))


if __name__ == "__main__":
    main()
