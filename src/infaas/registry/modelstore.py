"""Content-addressed store for model artifacts and validation data."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class ModelStore:
    """Files named by the SHA-256 of their content: ``<root>/<h[:2]>/<h><suffix>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes, suffix: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self._target(digest, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        return digest + suffix

    def put_file(self, path: str | Path, suffix: str | None = None) -> str:
        path = Path(path)
        return self.put_bytes(path.read_bytes(), suffix if suffix is not None else path.suffix)

    def path(self, key: str) -> Path:
        """Path of a stored artifact, by the key ``put_*`` returned."""
        digest = key.split(".", 1)[0]
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise KeyError(f"not a model store key: {key!r}")
        path = self.root / digest[:2] / key
        if not path.exists():
            raise KeyError(f"artifact {key} is missing from {self.root}")
        return path

    def _target(self, digest: str, suffix: str) -> Path:
        return self.root / digest[:2] / (digest + suffix)
