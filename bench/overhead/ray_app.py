"""The Ray Serve contender of bench/overhead (run with the Ray environment's Python, not infaas's).

What a Ray Serve user writes for one ONNX model: one replica, ``@serve.batch(max_batch_size=16)``,
an ONNX Runtime session with the same threads as infaas's worker, the request body the row's raw
bytes (the lightest encoding Ray Serve's HTTP proxy takes), the answer every output's raw bytes.
``max_ongoing_requests`` is raised to 64 (Ray's default, 5, would cap every batch at 5 rows; Ray's
batching guide says to raise it).

    ray_app.py MODEL.onnx INPUT DTYPE ROW_SHAPE_JSON THREADS PORT
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

MODEL, INPUT, DTYPE, SHAPE, THREADS, PORT = (
    sys.argv[1],
    sys.argv[2],
    sys.argv[3],
    json.loads(sys.argv[4]),
    int(sys.argv[5]),
    int(sys.argv[6]),
)


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": THREADS})
class Model:
    def __init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(MODEL, opts, providers=["CPUExecutionProvider"])

    @serve.batch(max_batch_size=16)
    async def run(self, rows: list[np.ndarray]) -> list[bytes]:
        outputs = self.session.run(None, {INPUT: np.stack(rows)})
        return [b"".join(o[i].tobytes() for o in outputs) for i in range(len(rows))]

    async def __call__(self, request: Request) -> Response:
        row = np.frombuffer(await request.body(), dtype=DTYPE).reshape(SHAPE)
        return Response(await self.run(row), media_type="application/octet-stream")


if __name__ == "__main__":
    ray.init(num_cpus=THREADS, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(Model.bind(), route_prefix="/")
    print("ready", flush=True)
    while True:
        time.sleep(3600)
