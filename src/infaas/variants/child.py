"""Build steps that run in a child process: ORT's quantization pre-processing, PyTorch's build and
NNCF's quantization. Their libraries (hundreds of MB imported for good), their scratch files and
any crash of theirs stay out of the server; a step that fails or runs too long is a reason, not an
exception in the registration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def run_child(module: str, args: list[str], work: Path, timeout_s: float, what: str) -> str:
    """``python -m module args...`` with ``work`` as its working and temporary directory (whatever it
    writes beside its output stays there); its stdout. RuntimeError with the child's reason (its
    stderr's last line), or with ``what`` took too long."""
    env = {**os.environ, "TMPDIR": str(work)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")
    return done.stdout


def child_main(step: Callable[[list[str]], str | None]) -> None:
    """The child's side: runs ``step`` on the command line's arguments and prints what it returns;
    any exception exits 2 with its reason as stderr's last line, for :func:`run_child`."""
    try:
        out = step(sys.argv[1:])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500], file=sys.stderr)
        sys.exit(2)
    if out is not None:
        print(out)
