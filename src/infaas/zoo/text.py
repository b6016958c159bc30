"""The text-embedding zoo: small sentence encoders trained here, on text that ships with Python.

Task ``text-embedding`` (quality metric ``cosine``: fidelity of a variant's outputs to its parent's),
one signature for every architecture, in the shape of a BERT-style encoder's ONNX export:

- inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: INT64 [-1, -1] (batch, sequence);
- outputs ``last_hidden_state``: FP32 [-1, -1, 128] (one vector per token) and
  ``sentence_embedding``: FP32 [-1, 128] (masked mean of the tokens, L2-normalised).

Corpus: the first paragraph of the docstrings of the standard library's public functions and
classes (a few thousand sentences; nothing is downloaded). Tokens: lower-cased words hashed into
``VOCAB`` ids (CRC32, the same on every install), ``[CLS]`` first, padded with 0. Training: the
encoders are distilled for a few hundred steps to the corpus's latent semantic analysis (TF-IDF
then truncated SVD, scikit-learn): sentences that share rare words get near embeddings. Seeded and
deterministic on a given install. Two depths: ``text-encoder-l2`` and ``text-encoder-l4``.
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import zlib

import numpy as np

from infaas.zoo.digits import ZooModel

TASK = "text-embedding"
VOCAB = 8192
HIDDEN = 128
MAX_LEN = 64
CLS, PAD = 1, 0
ARCHITECTURES = {"text-encoder-l2": (2, 256), "text-encoder-l4": (4, 512)}  # name: (layers, feed-forward width)
MODULES = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "colorsys",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "turtle",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
)
WORD = re.compile(r"[a-z][a-z0-9_]+")


def corpus(limit: int = 6000) -> list[str]:
    """First docstring paragraphs of the standard library (deduplicated, 4 words or more), sorted."""
    seen: set[str] = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module missing from a slim Python build
            continue
        objects = [module, *(getattr(module, a, None) for a in sorted(dir(module)) if not a.startswith("_"))]
        for obj in objects:
            members = [obj]
            if inspect.isclass(obj):
                members += [getattr(obj, a, None) for a in sorted(vars(obj)) if not a.startswith("_")]
            for m in members:
                doc = (
                    inspect.getdoc(m)
                    if m is not None and (inspect.isroutine(m) or inspect.isclass(m) or inspect.ismodule(m))
                    else None
                )
                if not doc:
                    continue
                text = " ".join(doc.split("\n\n")[0].split())
                if len(WORD.findall(text.lower())) >= 4:
                    seen.add(text[:400])
    return sorted(seen)[:limit]


def tokenize(texts: list[str], max_len: int = MAX_LEN) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask``, ``token_type_ids`` (INT64, padded to the longest text)."""
    rows = [
        [CLS] + [2 + zlib.crc32(w.encode()) % (VOCAB - 2) for w in WORD.findall(t.lower())][: max_len - 1]
        for t in texts
    ]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), PAD, np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    mask = (ids != PAD).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _encoder(layers: int, ffn: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    heads = 4

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
            self.out = nn.Linear(HIDDEN, HIDDEN)
            self.ln1, self.ln2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
            self.ff = nn.Sequential(nn.Linear(HIDDEN, ffn), nn.GELU(), nn.Linear(ffn, HIDDEN))

        def forward(self, x, bias):
            b, s, _ = x.shape
            qkv = self.qkv(x).reshape(b, s, 3, heads, HIDDEN // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = torch.softmax(q @ k.transpose(-1, -2) / (HIDDEN // heads) ** 0.5 + bias, dim=-1)
            x = self.ln1(x + self.out((att @ v).transpose(1, 2).reshape(b, s, HIDDEN)))
            return self.ln2(x + self.ff(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(VOCAB, HIDDEN)
            self.pos = nn.Embedding(4 * MAX_LEN, HIDDEN)
            self.typ = nn.Embedding(2, HIDDEN)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids, attention_mask, token_type_ids):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
            x = self.tok(input_ids) + self.pos(positions) + self.typ(token_type_ids)
            mask = attention_mask.to(x.dtype)
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            return x, pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-6)

    return Encoder()


def _targets(texts: list[str]) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(token_pattern=WORD.pattern, min_df=2, sublinear_tf=True).fit_transform(texts)
    lsa = TruncatedSVD(HIDDEN, random_state=0).fit_transform(tfidf)
    return (lsa / np.maximum(np.linalg.norm(lsa, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def train(name: str, texts: list[str], targets: np.ndarray, steps: int = 200, seed: int = 0):
    """Distil one encoder to the LSA targets (cosine loss), deterministic for a seed."""
    import torch

    layers, ffn = ARCHITECTURES[name]
    model = _encoder(layers, ffn, seed)
    torch.manual_seed(seed)
    tokens = {k: torch.from_numpy(v) for k, v in tokenize(texts).items()}
    y = torch.from_numpy(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(texts), 64))
        _, pooled = model(tokens["input_ids"][idx], tokens["attention_mask"][idx], tokens["token_type_ids"][idx])
        loss = (1 - (pooled * y[idx]).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def export(model) -> bytes:
    import torch

    sample = tokenize(["Return the number of items in a container."])
    buf = io.BytesIO()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes |= {"last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            tuple(torch.from_numpy(sample[n]) for n in names),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=["last_hidden_state", "sentence_embedding"],
            dynamic_axes=axes,
        )
    return buf.getvalue()


def program(model) -> bytes:
    """The encoder as a ``torch.export`` program (batch and sequence axes free): PyTorch's variants."""
    import torch

    from infaas.zoo.programs import export_program

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tokenize(["Return the number of items in a container.", "Open a socket."])
    return export_program(model, {n: torch.from_numpy(sample[n]) for n in names}, {n: {1: "sequence"} for n in names})


def sample_npz(texts: list[str]) -> bytes:
    """Registered sample inputs (an .npz, one array per input): the generator calibrates on the first
    half, the profiler measures fidelity on the second."""
    buf = io.BytesIO()
    np.savez(buf, **tokenize(texts))
    return buf.getvalue()


def build(names: list[str] | None = None, steps: int = 200) -> list[ZooModel]:
    import torch

    texts = corpus()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    samples = sample_npz([texts[i] for i in order[:1280]])  # the first 128 calibrate, the other 1,152 evaluate
    targets = _targets(texts)
    models = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(min(2, threads))
        for name in names or list(ARCHITECTURES):
            layers, ffn = ARCHITECTURES[name]
            model = train(name, texts, targets, steps)
            onnx_bytes = export(model)
            models.append(
                ZooModel(
                    name=name,
                    task=TASK,
                    onnx=onnx_bytes,
                    calibration=samples,
                    max_batch=16,
                    metric="cosine",
                    program=program(model),
                    description=f"{layers}-layer sentence encoder ({HIDDEN} wide, feed-forward {ffn}) distilled "
                    f"to LSA of {len(texts)} stdlib docstrings",
                )
            )
    finally:
        torch.set_num_threads(threads)
    return models
