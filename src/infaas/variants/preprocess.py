"""``python -m infaas.variants.preprocess SRC DST``: ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation) in a child process. ORT writes scratch files into the working
directory when a graph's symbolic shape inference is incomplete; the parent runs this with the job's
scratch directory as the working directory and temporary directory, so nothing lands anywhere else."""

from __future__ import annotations

import sys


def main() -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = sys.argv[1], sys.argv[2]
    try:
        quant_pre_process(src, dst)
    except Exception as exc:  # the parent reads the reason from stderr's last line
        print(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500], file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
