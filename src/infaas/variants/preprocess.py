"""``python -m infaas.variants.preprocess SRC DST``: ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation) in a child process. ORT writes scratch files into the working
directory when a graph's symbolic shape inference is incomplete; the parent runs this with the job's
scratch directory as the working directory and temporary directory, so nothing lands anywhere else."""

from __future__ import annotations

from infaas.variants.child import child_main


def _step(args: list[str]) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(args[0], args[1])


if __name__ == "__main__":
    child_main(_step)
