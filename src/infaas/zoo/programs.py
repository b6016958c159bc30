"""PyTorch programs of zoo models: ``torch.export`` archives (.pt2) registered beside their ONNX
graphs, the source of the ``pt-*`` variants. Without PyTorch installed there is none (``None``),
and registration goes on with ONNX's variants only."""

from __future__ import annotations

import io


def export_program(module, example: dict, dynamic: dict[str, dict[int, str]] | None = None) -> bytes:
    """A saved ``torch.export`` program of ``module`` (called with ``example``'s keyword inputs),
    its batch axis (and any axis ``dynamic`` names per input) left free."""
    import torch

    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str):
        return dims.setdefault(name, torch.export.Dim(name, min=1, max=1 << 16))

    shapes = {k: {0: dim("batch"), **{ax: dim(n) for ax, n in (dynamic or {}).get(k, {}).items()}} for k in example}
    with torch.no_grad():
        program = torch.export.export(module.eval(), (), example, dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def digits_conv_program(convs: list, w_out) -> bytes | None:
    """digits-conv as a PyTorch program: the same convolutions and read-out as its ONNX graph."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None

    class DigitsConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList()
            for w, b in convs:
                conv = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
                conv.weight.data, conv.bias.data = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
                self.convs.append(conv)
            self.register_buffer("w_out", torch.from_numpy(w_out.copy()))

        def forward(self, input):  # noqa: A002  (the task's input name)
            h = (input * (1 / 16)).reshape(-1, 1, 8, 8)
            for conv in self.convs:
                h = torch.relu(conv(h))
            logits = F.avg_pool2d(h, 2).flatten(1) @ self.w_out
            return {"label": logits.argmax(1), "probabilities": torch.softmax(logits, -1)}

    return export_program(DigitsConv(), {"input": torch.zeros((2, 64))})
