"""Regenerate the protobuf Python module from src/infaas/protocol/proto/kserve_v2.proto.

Needs grpcio-tools (in the [dev] extra): ``python scripts/gen_proto.py``. The generated module
is committed, so installing infaas does not need grpcio-tools.
"""

from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parent.parent / "src"
PROTO = "infaas/protocol/proto/kserve_v2.proto"

if __name__ == "__main__":
    code = protoc.main(["protoc", f"-I{SRC}", f"--python_out={SRC}", f"--pyi_out={SRC}", str(SRC / PROTO)])
    raise SystemExit(code)
