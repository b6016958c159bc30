"""Scratch space: every temporary file of generation, quantization and profiling lives under
``<data-dir>/tmp``, in a directory of its own per job, removed when the job ends (also on error).

ONNX Runtime's helpers write temporary files of their own: into the temporary directory (which a server
points at ``<data-dir>/tmp`` while it runs, :func:`own_tempdir`) and, for a graph whose symbolic shape
inference is incomplete, into the process's working directory; the step that can do the latter runs
in a child process whose working directory is the job's scratch directory.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def scratch_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "tmp"


@contextlib.contextmanager
def scratch(data_dir: str | Path, job: str) -> Iterator[Path]:
    """A fresh directory ``<data-dir>/tmp/<job>-<random>`` for one job, removed at exit whatever happens.
    Two jobs at once never share it (the suffix is unique)."""
    root = scratch_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", job)[:80] or "job"
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def own_tempdir(data_dir: str | Path) -> Iterator[Path]:
    """Point this process's temporary directory (``tempfile``) at ``<data-dir>/tmp`` while a server
    runs, so libraries' own temporary files land there too; put it back at exit unless another server
    has taken it since (then that one puts it back)."""
    root = scratch_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    before, tempfile.tempdir = tempfile.tempdir, str(root)
    try:
        yield root
    finally:
        if tempfile.tempdir == str(root):
            tempfile.tempdir = before if before is None or Path(before).is_dir() else None
