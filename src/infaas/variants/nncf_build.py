"""``python -m infaas.variants.nncf_build SOURCE CALIBRATION TARGET OVERFLOW_FIX``: NNCF's post-training
quantization of an ONNX graph in a child process (:meth:`infaas.variants.quantize.Quantizer.nncf`).

NNCF (OpenVINO's compression framework) calibrates on the same rows as ORT's recipes (an .npz of
named inputs), places its quantizers for OpenVINO's INT8 kernels, corrects each layer's bias for the
error quantization adds (fast bias correction), and writes a QDQ ONNX graph. ``OVERFLOW_FIX`` is one of
NNCF's modes (``enable``: 7-bit weights everywhere; ``first_layer_only``; ``disable``). Prints one JSON
line: NNCF's version and the seconds it took."""

from __future__ import annotations

import json
import time

from infaas.variants.child import child_main


def _step(args: list[str]) -> str:
    import nncf
    import numpy as np
    import onnx

    source, calibration, target, overflow_fix = args
    data = np.load(calibration)
    rows = len(data[data.files[0]])
    samples = [{name: data[name][i : i + 1] for name in data.files} for i in range(rows)]
    start = time.perf_counter()
    quantized = nncf.quantize(
        onnx.load(source),
        nncf.Dataset(samples),
        subset_size=rows,
        advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix)),
    )
    onnx.save(quantized, target)
    return json.dumps({"nncf": nncf.__version__, "quantize_s": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    child_main(_step)
