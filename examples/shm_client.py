"""Triton's system shared memory against infaas, with tritonclient alone (no infaas import).

The client writes the input into a POSIX shared-memory object, registers it and an output object
with the server, and sends requests that name the regions instead of carrying bytes; the server's
worker reads the input and writes the outputs in place. The answers are checked against the same
request sent the usual way, then the regions are unregistered and the objects destroyed.

    infaas zoo add digits --data-dir ./data && infaas serve --data-dir ./data --grpc-port 8001 &
    python examples/shm_client.py --url 127.0.0.1:8000               # HTTP
    python examples/shm_client.py --url 127.0.0.1:8001 --grpc        # gRPC
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import triton_to_np_dtype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8000", help="host:port of infaas's HTTP (or, with --grpc, gRPC) port")
    p.add_argument("--grpc", action="store_true")
    p.add_argument("--model", default="digits-mlp")
    p.add_argument("--rows", type=int, default=4)
    args = p.parse_args()
    lib = grpcclient if args.grpc else httpclient
    client = lib.InferenceServerClient(args.url)
    meta = client.get_model_metadata(args.model, **({"as_json": True} if args.grpc else {}))
    spec = meta["inputs"][0]
    shape = [args.rows] + [int(d) for d in spec["shape"][1:]]
    x = np.random.default_rng(0).random(shape).astype(triton_to_np_dtype(spec["datatype"]))

    # what each output takes (its batch axis at --rows), laid out one after another in one object
    plain = client.infer(args.model, [_input(lib, spec, x)])
    outputs = [(o["name"], plain.as_numpy(o["name"])) for o in meta["outputs"]]
    offsets, size = [], 0
    for _, arr in outputs:
        offsets.append(size)
        size += arr.nbytes
    tag = f"{os.getpid()}"
    in_handle = shm.create_shared_memory_region(f"in-{tag}", f"/infaas-example-in-{tag}", x.nbytes)
    out_handle = shm.create_shared_memory_region(f"out-{tag}", f"/infaas-example-out-{tag}", max(size, 1))
    try:
        shm.set_shared_memory_region(in_handle, [x])
        client.register_system_shared_memory(f"in-{tag}", f"/infaas-example-in-{tag}", x.nbytes)
        client.register_system_shared_memory(f"out-{tag}", f"/infaas-example-out-{tag}", max(size, 1))
        inp = lib.InferInput(spec["name"], shape, spec["datatype"])
        inp.set_shared_memory(f"in-{tag}", x.nbytes)
        wanted = []
        for (name, arr), offset in zip(outputs, offsets, strict=True):
            out = lib.InferRequestedOutput(name)
            out.set_shared_memory(f"out-{tag}", arr.nbytes, offset=offset)
            wanted.append(out)
        client.infer(args.model, [inp], outputs=wanted)
        for (name, arr), offset in zip(outputs, offsets, strict=True):
            got = shm.get_contents_as_numpy(out_handle, arr.dtype, list(arr.shape), offset=offset)
            same = np.allclose(got, arr, rtol=1e-5, atol=1e-6)
            print(f"{name}: {list(arr.shape)} {arr.dtype} from shared memory, same as the plain answer: {same}")
            if not same:
                raise SystemExit(f"output {name} differs from the plain answer")
        status = client.get_system_shared_memory_status(**({"as_json": True} if args.grpc else {}))
        print(f"regions registered: {len(status.get('regions', {}) if args.grpc else status)}")
    finally:
        client.unregister_system_shared_memory(f"in-{tag}")
        client.unregister_system_shared_memory(f"out-{tag}")
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
        client.close()
    print(f"ok: {math.prod(shape)} input values in, {len(outputs)} outputs out, no tensor bytes on the wire")


def _input(lib, spec: dict, x: np.ndarray):
    inp = lib.InferInput(spec["name"], list(x.shape), spec["datatype"])
    inp.set_data_from_numpy(x)
    return inp


if __name__ == "__main__":
    main()
