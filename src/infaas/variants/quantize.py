"""Quantization of an architecture's graph: the default recipe of each INT8 format, the search
steps beyond it, and the :class:`Quantizer` (ORT pre-processing once, then static QDQ or dynamic
quantization by recipe; sensitivity of each node for mixed precision)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from infaas.hardware import HardwareKind, local_kind
from infaas.registry import Architecture, Registry
from infaas.variants.artifact import Artifact, calibration_inputs
from infaas.variants.child import run_child

QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose", "Gather", "Attention", "LSTM", "GRU"}
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the weight-bearing ops (recipe "ops": "compute")


def _has_quantizable_ops(model_path: Path) -> bool:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return any(node.op_type in QUANTIZABLE_OPS for node in graph.node)


def _quantized_something(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(
        n.op_type
        in (
            "QuantizeLinear",
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "ConvInteger",
            "QLinearConv",
            "QLinearMatMul",
            "DequantizeLinear",
        )
        for n in graph.node
    )


NNCF_TIMEOUT_S = 1800.0  # NNCF's calibration and bias correction (~14 s for Lite0 on 2 cores)


def nncf_overflow_fix(kind: HardwareKind) -> tuple[str, str]:
    """NNCF's overflow fix for INT8 on ``kind``, and why: x86 CPUs without VNNI multiply u8 by s8 with
    an instruction (VPMADDUBSW) whose 16-bit sums saturate at 8-bit weights, so every layer gets 7-bit
    weights there (measured on Lite0 on an AVX2-only EPYC: agreement with fp32 0.82 against 0.70 with
    the first layer only); elsewhere NNCF's default."""
    if kind.machine in ("x86_64", "AMD64") and not kind.vnni:
        return (
            "enable",
            "no VNNI on this CPU: 8-bit weights would saturate its INT8 kernels, so 7-bit weights in every layer",
        )
    return "first_layer_only", "NNCF's default: this CPU's INT8 kernels do not saturate"


class _QuietQuantizer(logging.Filter):
    """Drops ONNX Runtime quantization's warnings (multi-line tensor dumps on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


# The default recipe of each quantized format; the search (``search_recipes``) varies one choice at a
# time from it, then keeps the most sensitive nodes in fp32.
DEFAULT_RECIPES: dict[str, dict] = {
    "onnx-int8-static": {
        "calibrate": "MinMax",
        "activation": "QUInt8",
        "weight": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "ops": "all",
        "exclude": [],
    },
    "onnx-int8-dynamic": {"weight": "QUInt8", "per_channel": False, "reduce_range": False, "exclude": []},
}
SEARCH_STEPS: dict[str, list[dict]] = {
    "onnx-int8-static": [
        {"ops": "compute"},
        {"reduce_range": True},
        {"activation": "QInt8"},
        {"calibrate": "Percentile"},
        {"calibrate": "Entropy"},
        {"activation": "QUInt8", "weight": "QUInt8"},
        {"per_channel": False},
    ],
    "onnx-int8-dynamic": [{"weight": "QInt8"}, {"per_channel": True}, {"reduce_range": True}],
}


def describe_recipe(recipe: dict) -> str:
    """A recipe in a few words, e.g. ``MinMax U8S8 per-channel, 3 nodes fp32``."""
    act = "U8" if recipe.get("activation", "QUInt8") == "QUInt8" else "S8"
    wt = "U8" if recipe.get("weight") == "QUInt8" else "S8"
    words = [recipe["calibrate"], f"{act}{wt}"] if "calibrate" in recipe else [f"weights {wt}"]
    words.append("per-channel" if recipe.get("per_channel") else "per-tensor")
    if recipe.get("reduce_range"):
        words.append("reduce-range")
    if recipe.get("ops") == "compute":
        words.append("compute ops only")
    text = " ".join(words)
    return f"{text}, {len(recipe['exclude'])} node(s) fp32" if recipe.get("exclude") else text


def _pre_process(source: Path, target: Path, timeout_s: float = 900.0) -> None:
    """ORT's quantization pre-processing in a child process working in ``target``'s (scratch) directory:
    whatever ORT writes beside the working directory stays there. RuntimeError with ORT's reason."""
    work = target.parent / "pre-process"
    work.mkdir()
    run_child("infaas.variants.preprocess", [str(source), str(target)], work, timeout_s, "pre-processing")


class Quantizer:
    """Quantizes one architecture by recipe: pre-processes the graph once (shape inference and
    optimisation), holds the calibration inputs, and stores every artifact it makes. Use as a
    context manager (its scratch directory goes at exit)."""

    def __init__(self, registry: Registry, arch: Architecture, progress: Callable[[str], None] | None = None) -> None:
        self.registry, self.arch = registry, arch
        self.say = progress or (lambda _msg: None)
        self.source = registry.models.path(arch.model_hash)
        self.quantizable = _has_quantizable_ops(self.source)
        self.calib = calibration_inputs(registry, arch)
        self._scratch: contextlib.AbstractContextManager[Path] | None = None
        self._dir: Path | None = None
        self._pre: Path | None = None
        self._quiet = _QuietQuantizer()

    def __enter__(self) -> Quantizer:
        self._scratch = self.registry.scratch(f"quantize-{self.arch.name}")
        self._dir = self._scratch.__enter__()
        logging.getLogger().addFilter(self._quiet)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeFilter(self._quiet)
        if self._scratch is not None:
            self._scratch.__exit__(*exc)
            self._scratch = self._dir = None

    @property
    def dir(self) -> Path:
        assert self._dir is not None, "use Quantizer as a context manager"
        return self._dir

    def pre(self) -> Path:
        """The pre-processed float graph (named nodes), made once."""
        if self._pre is None:
            import onnx

            self._pre = self.dir / "pre.onnx"
            self.say("pre-processing for quantization (shape inference, optimisation)")
            try:
                _pre_process(self.source, self._pre)
            except RuntimeError as exc:  # some graphs defeat symbolic shape inference
                self.say(f"pre-processing skipped: {exc}")
                self._pre.write_bytes(self.source.read_bytes())
            model = onnx.load(str(self._pre))
            for i, node in enumerate(model.graph.node):  # exclusions name nodes: every node gets a name
                if not node.name:
                    node.name = f"{node.op_type}_{i}"
            onnx.save(model, str(self._pre))
        return self._pre

    def _calibrated(self, rows: int) -> dict:
        return {
            "calibration_rows": rows,
            "calibrated_on": "calibration" if self.arch.calibration_hash else "validation",
        }

    def why_not(self, fmt: str) -> str | None:
        if not self.quantizable:
            return f"no quantizable operators ({', '.join(sorted(QUANTIZABLE_OPS))}) in the graph"
        if fmt == "onnx-int8-static" and self.calib is None:
            return "no calibration or validation data was registered"
        return None

    def quantize(self, fmt: str, recipe: dict) -> Artifact:
        """One artifact of ``fmt`` made with ``recipe``; raises ValueError with the reason when it cannot be."""
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        if (why := self.why_not(fmt)) is not None:
            raise ValueError(why)
        out = self.dir / f"q{len(list(self.dir.iterdir()))}.onnx"
        common = {
            "per_channel": recipe["per_channel"],
            "reduce_range": recipe["reduce_range"],
            "weight_type": QuantType[recipe["weight"]],
            "nodes_to_exclude": list(recipe["exclude"]) or None,
        }
        extra_done: dict = {}
        if fmt == "onnx-int8-dynamic":
            self.say(f"{fmt}: quantizing weights ({describe_recipe(recipe)})")
            try:
                quantize_dynamic(str(self.pre()), str(out), **common)
            except Exception as exc:
                raise ValueError(f"quantization failed: {type(exc).__name__}: {exc}") from None
            method = "int8-dynamic"
        else:
            calib = self.calib
            assert calib is not None
            rows = len(next(iter(calib.values())))

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._it = iter([{k: v[i : i + 1] for k, v in calib.items()} for i in range(rows)])

                def get_next(self):
                    return next(self._it, None)

            self.say(f"{fmt}: calibrating on {rows} inputs ({describe_recipe(recipe)})")
            overrides = self._entropy_ranges(Reader(), recipe) if recipe["calibrate"] == "Entropy" else {}
            # ORT's per-channel weight-scale adjustment for int32 biases fails on some Gemm graphs; the
            # second attempt skips that adjustment and says so in the params
            errors = []
            for extra in ({}, {"QDQDisableWeightAdjustForInt32Bias": True}):
                try:
                    quantize_static(
                        str(self.pre()),
                        str(out),
                        Reader(),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType[recipe["activation"]],
                        calibrate_method=CalibrationMethod["MinMax" if overrides else recipe["calibrate"]],
                        extra_options={**extra, **overrides},
                        op_types_to_quantize=list(COMPUTE_OPS) if recipe.get("ops") == "compute" else None,
                        **common,
                    )
                    extra_done = extra
                    break
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            else:
                raise ValueError(f"quantization failed: {'; '.join(errors)}")
            extra_done = {**extra_done, **self._calibrated(rows)}
            method = "int8-mixed" if recipe["exclude"] else "int8-static"
        if not _quantized_something(out):
            raise ValueError("the quantizer left the graph unchanged")
        params = {"recipe": dict(recipe), "recipe_text": describe_recipe(recipe), **extra_done}
        if fmt == "onnx-int8-static":
            params["quant_format"] = "QDQ"
        return Artifact(fmt, self.registry.models.put_file(out), method, params)

    def nncf(self, fmt: str) -> Artifact:
        """``fmt`` made by NNCF's post-training quantization (a QDQ graph for OpenVINO's INT8 kernels)
        on the same calibration rows, in a child process; ValueError with the reason when it cannot be."""
        if (why := self.why_not("onnx-int8-static")) is not None:
            raise ValueError(why)
        if importlib.util.find_spec("nncf") is None:
            raise ValueError("NNCF is not installed (pip install 'infaas[openvino]'; make install-dev installs it)")
        assert self.calib is not None
        rows = len(next(iter(self.calib.values())))
        overflow_fix, why_fix = nncf_overflow_fix(local_kind())
        work = self.dir / f"nncf-{len(list(self.dir.iterdir()))}"
        work.mkdir()
        np.savez(work / "calibration.npz", **self.calib)
        out = work / "int8.onnx"
        self.say(f"{fmt}: NNCF post-training quantization on {rows} inputs (overflow fix: {overflow_fix})")
        args = [str(self.source), str(work / "calibration.npz"), str(out), overflow_fix]
        try:
            done = run_child("infaas.variants.nncf_build", args, work, NNCF_TIMEOUT_S, "NNCF's quantization")
        except RuntimeError as exc:
            raise ValueError(f"NNCF could not quantize the graph: {exc}") from None
        if not _quantized_something(out):
            raise ValueError("NNCF left the graph unchanged")
        params = {
            "quantizer": "nncf",
            **json.loads(done.strip().splitlines()[-1]),
            "overflow_fix": overflow_fix,
            "overflow_fix_why": why_fix,
            **self._calibrated(rows),
            "precision": "f32",
        }
        return Artifact(fmt, self.registry.models.put_file(out), "nncf-int8", params)

    def _entropy_ranges(self, reader, recipe: dict) -> dict:
        """Activation ranges by KL divergence (TensorRT's method: 2,048 histogram bins searched for
        the 128-bin range that loses least), as tensor overrides. ``quantize_static`` cannot pass
        bin counts to its Entropy calibrator, whose defaults (128 bins into 128) leave nothing to
        search: it returns the MinMax ranges."""
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator

        ops = list(COMPUTE_OPS) if recipe.get("ops") == "compute" else None
        calibrator = create_calibrator(
            self.pre(),
            ops,
            augmented_model_path=str(self.dir / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": 2048, "num_quantized_bins": 128},
        )
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        overrides = {}
        for name, data in ranges.items():
            lo, hi = data.range_value if hasattr(data, "range_value") else data[:2]
            overrides[name] = [{"rmin": np.float32(min(float(lo), 0.0)), "rmax": np.float32(max(float(hi), 0.0))}]
        return {"TensorQuantOverrides": overrides}

    def sensitivity(self, fmt: str, artifact: Artifact, rows: int = 8) -> list[tuple[tuple[str, ...], float]]:
        """Per-group sensitivity. A group is what the quantized graph computes between quantized
        tensors: a node whose output is quantized plus the nodes feeding it whose outputs are not
        (a Conv and its ReLU6 run as one integer kernel). For each group, how much relative error
        its quantized output carries beyond the largest error among its quantized inputs (the
        error it adds), on ``rows`` calibration inputs. The quantized graph runs as served, its QDQ
        groups fused into this CPU's integer kernels: the error read is that of the kernels that
        will run (without VNNI, U8S8 kernels can saturate where a simulation in float would not).
        Returns (node names, added error), most sensitive first; only groups that add error."""
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        from infaas.registry.onnxinfo import named_inputs

        if self.calib is None:
            return []
        float_model = onnx.load(str(self.pre()))
        quant_model = onnx.load(str(self.registry.models.path(artifact.key)))
        consts = {i.name: numpy_helper.to_array(i) for i in quant_model.graph.initializer}
        # float tensor -> the QuantizeLinear that quantizes it (scale and zero point constant)
        quantized = {
            n.input[0]: n
            for n in quant_model.graph.node
            if n.op_type == "QuantizeLinear" and all(t in consts for t in n.input[1:3])
        }
        producer = {o: n for n in float_model.graph.node for o in n.output}
        groups: list[tuple[list[str], str, set[str]]] = []  # (node names, output, quantized inputs)
        for node in float_model.graph.node:
            if not node.output or node.output[0] not in quantized:
                continue
            names, inputs, todo = [node.name], set(), list(node.input)
            while todo:
                t = todo.pop()
                if t in quantized:
                    inputs.add(t)
                elif t in producer and len(names) < 8 and producer[t].name not in names:
                    names.insert(0, producer[t].name)
                    todo.extend(producer[t].input)
            groups.append((names, node.output[0], inputs))
        watched = {t for _, out, inputs in groups for t in (out, *inputs) if t in producer}
        if not watched:  # nothing quantized is computed inside the graph (e.g. only its inputs)
            return []
        x = named_inputs({k: v[:rows] for k, v in self.calib.items()}, self.arch.signature)

        def run(model, names: dict[str, str], level) -> dict[str, np.ndarray]:
            """``names``: graph tensor -> the float tensor it stands for."""
            have = {o.name for o in model.graph.output}
            for t in sorted(set(names) - have):
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            wanted = [o.name for o in session.get_outputs() if o.name in names]
            if not wanted:  # (ONNX Runtime answers every output when asked for none)
                return {}
            return {names[t]: v for t, v in zip(wanted, session.run(wanted, x), strict=True)}

        f = run(float_model, {t: t for t in watched}, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        q_raw = run(
            quant_model, {quantized[t].output[0]: t for t in watched}, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        q = {}
        for t, v in q_raw.items():
            node = quantized[t]
            scale, zero = consts[node.input[1]].astype(np.float64), consts[node.input[2]].astype(np.float64)
            q[t] = (v.astype(np.float64) - zero) * scale

        def err(t: str) -> float:
            if t not in f or t not in q or f[t].shape != q[t].shape or f[t].dtype.kind != "f":
                return 0.0
            a = f[t].astype(np.float64)
            return float(np.linalg.norm(a - q[t]) / max(np.linalg.norm(a), 1e-12))

        scores = [
            (tuple(names), err(out) - max((err(t) for t in inputs), default=0.0)) for names, out, inputs in groups
        ]
        return sorted((s for s in scores if s[1] > 0), key=lambda s: -s[1])
