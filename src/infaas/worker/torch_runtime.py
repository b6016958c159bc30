"""PyTorch behind the runtime contract: a registered ``torch.export`` program (.pt2), run eagerly.

``precision`` "fp32", or "bf16" (autocast: matmuls and convolutions in bf16, outputs back to their
registered types); ``compiled_for``: the artifact is an AOTInductor package (the program compiled
ahead of time to a shared library for that hardware kind; loading it on another kind is refused,
its code may use instructions this CPU lacks); ``channels_last`` converts the program's 4-D
weights to the channels-last memory format (the generator measures whether it pays); ``device``
"cpu" or "cuda". Threads: PyTorch's
intra-op thread count belongs to the calling thread's OpenMP settings, so each executor thread
sets it to the variant's own before it runs (two variants in one worker keep their counts).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from infaas.errors import RuntimeContractError


def import_torch():
    """``torch``, or the contract error that says how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeContractError(f"PyTorch is not installed ({exc}): pip install 'infaas[zoo]'") from None
    return torch


class TorchRuntime:
    """One loaded PyTorch program for one variant."""

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        precision: str = "fp32",
        device: str = "cpu",
        outputs: tuple[str, ...] | list[str] = (),
        channels_last: bool = False,
        compiled_for: str | None = None,
        inputs: list | None = None,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise RuntimeContractError(f"unknown PyTorch precision {precision!r} (fp32 or bf16)")
        self.path = Path(path)
        self.threads = max(1, threads)
        self.precision = precision
        self.provider = device
        self.outputs = list(outputs)
        self.channels_last = channels_last
        self.compiled_for = compiled_for
        self.load_time_s = 0.0
        self._module = None
        # (name, shape after the batch (None: free), dtype name), as the generator recorded them
        self._recorded = [(n, None if d is None else tuple(d), t) for n, d, t in inputs or ()]
        self._inputs: list[tuple[str, tuple | None, object]] = []  # (name, shape after the batch, torch dtype)

    def load(self) -> None:
        torch = import_torch()
        if self.provider == "cuda" and not torch.cuda.is_available():
            raise RuntimeContractError("PyTorch has no CUDA device here")
        start = time.perf_counter()
        if self.compiled_for is not None:
            self._load_compiled(torch)
            self.load_time_s = time.perf_counter() - start
            return
        try:
            program = torch.export.load(str(self.path))
        except Exception as exc:
            raise RuntimeContractError(f"not a loadable torch.export program: {exc}") from None
        self._inputs = program_inputs(program)
        module = program.module()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module = module.to(self.provider) if self.provider != "cpu" else module
        self.load_time_s = time.perf_counter() - start

    def _load_compiled(self, torch) -> None:
        from infaas.hardware import local_kind

        if self.compiled_for != local_kind().id:
            raise RuntimeContractError(
                f"compiled by AOTInductor for hardware kind {self.compiled_for}, not this one ({local_kind().id})"
            )
        try:
            self._module = torch._inductor.aoti_load_package(str(self.path))
        except Exception as exc:
            raise RuntimeContractError(f"not a loadable AOTInductor package: {exc}") from None
        self._inputs = [(n, d, getattr(torch, t)) for n, d, t in self._recorded]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._module is None:
            raise RuntimeContractError("runtime is not loaded")
        torch = import_torch()
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        args = {}
        for name, _, _ in self._inputs:
            if name not in inputs:
                raise RuntimeContractError(f"the program needs input {name!r}")
            x = np.ascontiguousarray(inputs[name])
            if not x.flags.writeable:  # torch.from_numpy shares memory and warns on read-only arrays
                x = x.copy()
            args[name] = torch.from_numpy(x).to(self.provider) if self.provider != "cpu" else torch.from_numpy(x)
        autocast = (
            torch.autocast(self.provider, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = self._module(**args)
        return self._named(out)

    def _named(self, out) -> dict[str, np.ndarray]:
        """The program's outputs by name: a dict as returned, else a tensor or a tuple in the order
        of the registered signature's outputs."""
        if isinstance(out, dict):
            items = list(out.items())
        else:
            values = list(out) if isinstance(out, (tuple, list)) else [out]
            if len(values) != len(self.outputs):
                raise RuntimeContractError(
                    f"the program returned {len(values)} outputs, the signature names {len(self.outputs)}"
                )
            items = list(zip(self.outputs, values, strict=True))
        torch = import_torch()
        result = {}
        for name, value in items:
            if value.dtype == torch.bfloat16:
                value = value.float()
            result[name] = value.detach().cpu().numpy()
        return result

    def unload(self) -> None:
        self._module = None

    def release_memory(self) -> None:
        """Nothing to shrink: PyTorch's CPU allocator returns large blocks to the system itself."""

    @property
    def input_specs(self) -> list[tuple[str, tuple | None, object]]:
        """(name, shape after the batch with None for a free axis, torch dtype) of each input, once loaded."""
        return list(self._inputs)

    @property
    def has_4d_weights(self) -> bool:
        """Whether the loaded (eager) program has convolution-shaped weights: channels-last may matter."""
        return self._module is not None and any(p.dim() == 4 for p in self._module.parameters())

    def sample_inputs(self, rows: int) -> dict[str, np.ndarray] | None:
        """Zeros of the program's input shapes, or None when a non-batch dimension is free."""
        if self._module is None:
            return None
        torch = import_torch()
        out = {}
        for name, dims, dtype in self._inputs:
            if dims is None or dtype is None or any(d is None for d in dims):
                return None
            out[name] = torch.zeros((rows, *dims), dtype=dtype).numpy()
        return out

    def metadata(self) -> dict:
        return {
            "path": str(self.path),
            "threads": self.threads,
            "runtime": "pytorch",
            "precision": self.precision,
            "device": self.provider,
            "channels_last": self.channels_last,
            "compiled_for": self.compiled_for,
            "load_time_s": self.load_time_s,
        }


def program_inputs(program) -> list[tuple[str, tuple | None, object]]:
    """(name, shape after the batch with None for a free axis, torch dtype) of an exported
    program's user inputs."""
    specs = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    out = []
    for name in program.graph_signature.user_inputs:
        val = specs.get(name)
        dims = tuple(d if isinstance(d, int) else None for d in val.shape[1:]) if val is not None else None
        out.append((name, dims, None if val is None else val.dtype))
    return out
