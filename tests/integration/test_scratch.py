"""Scratch files: registering and profiling a model writes temporary files only under
``<data-dir>/tmp/<job>``, never into the server's working directory, and removes them afterwards.

The encoder is built here so that ONNX Runtime's symbolic shape inference cannot finish on it (its two
inputs name their sequence axes differently, as some exported sentence encoders do): that is the case
where ORT's quantization pre-processing writes ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data``
file into the current directory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infaas.app import free_port
from infaas.client import Client
from tests.conftest import wait_until

torch = pytest.importorskip("torch", reason="needs the [zoo] extra")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _encoder(seed: int) -> bytes:
    from torch import nn

    torch.manual_seed(seed)

    class Encoder(nn.Module):  # one attention layer, single head (no reshapes)
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(500, 32)
            self.qkv = nn.Linear(32, 96)
            self.out = nn.Linear(32, 32)

        def forward(self, input_ids, attention_mask):
            q, k, v = self.qkv(self.embed(input_ids)).chunk(3, dim=-1)
            bias = (1.0 - attention_mask[:, None, :].float()) * -1e4  # [batch, 1, mask_sequence]
            att = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5 + bias, dim=-1)
            return self.out(att @ v).mean(1)

    ids = torch.randint(1, 500, (2, 8))
    buf = io.BytesIO()
    torch.onnx.export(
        Encoder().eval(),
        (ids, torch.ones_like(ids)),
        buf,
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "mask_sequence"},  # a name of its own: inference stays incomplete
            "embedding": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    return buf.getvalue()


def _watch(paths: list[Path], seen: set[str], stop: threading.Event) -> None:
    """Everything that ever appears in ``paths`` (polled every 20 ms)."""
    while not stop.is_set():
        for p in paths:
            if p.is_dir():
                seen.update(f"{p.name}/{child.name}" for child in p.iterdir())
        time.sleep(0.02)


def test_registration_writes_only_into_its_own_scratch_directories(tmp_path):
    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    cwd.chmod(0o555)  # read-only (root can still write: what is checked is that nothing appears)
    port = free_port()
    env = {**os.environ, "INFAAS_QUANT_SEARCH_S": "1", "INFAAS_EVAL_ROWS": "64", "INFAAS_PROFILE_AXIS_SIZE": "16"}
    log = (tmp_path / "server.log").open("w")
    cmd = [sys.executable, "-m", "infaas.cli", "serve", "--port", str(port), "--data-dir", str(data)]
    server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=([cwd, data / "tmp"], seen, stop), daemon=True)
    watcher.start()
    try:
        url = f"http://127.0.0.1:{port}"
        with Client(url, timeout=600) as c:
            assert wait_until(lambda: _ready(c), 60), (tmp_path / "server.log").read_text()[-3000:]
            models = {f"encoder-{i}": _encoder(i) for i in (0, 1)}
            threads = [
                threading.Thread(target=c.register, args=(name, "embedding", onnx)) for name, onnx in models.items()
            ]
            for t in threads:  # two registrations at once
                t.start()
            for t in threads:
                t.join(120)
            assert wait_until(lambda: all(_finished(c, name) for name in models), 600)
            summaries = {name: c.profiling(name) for name in models}
    finally:
        stop.set()
        watcher.join(5)
        server.terminate()
        server.wait(30)
        cwd.chmod(0o755)
    for state in summaries.values():
        assert state["error"] is None, state
        assert state["summary"]["ready"] >= 1, state  # profiled through (quantized variants judged too)
    assert not [s for s in seen if s.startswith("cwd/")], f"written into the working directory: {seen}"
    assert list(cwd.iterdir()) == []
    jobs = {s for s in seen if s.startswith("tmp/quantize-")}
    assert {j.split("/")[1].rsplit("-", 1)[0] for j in jobs} == {"quantize-encoder-0", "quantize-encoder-1"}, seen
    assert list((data / "tmp").iterdir()) == [], "scratch directories must be removed when their job ends"


def _ready(c: Client) -> bool:
    try:
        return c.ready()
    except Exception:
        return False


def _finished(c: Client, arch: str) -> bool:
    try:
        return c.profiling(arch)["finished"] is not None
    except Exception:
        return False
