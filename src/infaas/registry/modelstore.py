"""Content-addressed store for model artifacts and validation data."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol


class Blobs(Protocol):
    def put_blob(self, key: str, data: bytes) -> None: ...
    def get_blob(self, key: str) -> bytes | None: ...


class ModelStore:
    """Files named by the SHA-256 of their content: ``<root>/<h[:2]>/<h><suffix>``.

    With ``blobs`` (a shared store, e.g. Redis) every artifact is also written there, and one missing
    here is fetched from there (verified against its hash): frontends on several machines share
    models without a shared file system, ``root`` being each machine's cache."""

    def __init__(self, root: str | Path, blobs: Blobs | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = blobs

    def put_bytes(self, data: bytes, suffix: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._write(digest, suffix, data)
        if self.blobs is not None:
            self.blobs.put_blob(digest + suffix, data)
        return digest + suffix

    def _write(self, digest: str, suffix: str, data: bytes) -> Path:
        target = self._target(digest, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        return target

    def put_file(self, path: str | Path, suffix: str | None = None) -> str:
        path = Path(path)
        return self.put_bytes(path.read_bytes(), suffix if suffix is not None else path.suffix)

    def path(self, key: str) -> Path:
        """Path of a stored artifact, by the key ``put_*`` returned."""
        digest = key.split(".", 1)[0]
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise KeyError(f"not a model store key: {key!r}")
        path = self.root / digest[:2] / key
        if path.exists():
            return path
        data = self.blobs.get_blob(key) if self.blobs is not None else None
        if data is None:
            raise KeyError(f"artifact {key} is missing from {self.root}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise KeyError(f"artifact {key} in the shared store does not match its hash")
        return self._write(digest, key[len(digest) :], data)

    def _target(self, digest: str, suffix: str) -> Path:
        return self.root / digest[:2] / (digest + suffix)
