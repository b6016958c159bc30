"""System shared memory on the wire (Triton's extension): what a request names, where it lies, and
how a process maps it.

A client creates a POSIX shared-memory object (``/dev/shm/<key>``), registers a *region* of it with
the server by name (key, offset, byte size), and then names the region (and an offset and size in
it) in an input's or output's parameters instead of sending the bytes. Three types:

- :class:`ShmRef`: what a request names (region name, offset in the region, byte size), parsed and
  checked from ``shared_memory_region`` / ``shared_memory_offset`` / ``shared_memory_byte_size``;
- :class:`Span`: where those bytes lie (the object's key and inode, start and length in the file),
  small enough to travel to a worker process, which maps the same object (:class:`Maps`);
- :class:`ShmTensor`: a tensor that lies in a span (its dtype and shape), the placeholder that
  travels instead of the array.

Only objects under ``/dev/shm`` can be opened, never through a symbolic link, and only regular files.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from infaas.errors import InvalidInput

SHM_DIR = "/dev/shm"
REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"


@dataclass(frozen=True, slots=True)
class ShmRef:
    """A tensor's bytes as a request names them: ``byte_size`` bytes at ``offset`` in region ``region``."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class Span:
    """``nbytes`` bytes at ``start`` in the shared-memory object ``key`` (inode ``ino``)."""

    key: str
    ino: int
    start: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ShmTensor:
    """A tensor that lies in ``span`` (row-major, ``dtype`` as numpy's ``dtype.str``)."""

    span: Span
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _count(params: dict[str, Any], key: str, what: str, default: int | None) -> int:
    raw = params.get(key, default)
    if raw is None:
        raise InvalidInput(f"{what}: '{REGION}' needs '{key}'")
    if isinstance(raw, str) and raw.strip().isdigit():  # clients that send only strings
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidInput(f"{what}: '{key}' must be a non-negative integer, got {raw!r}")
    return raw


def ref_of(params: dict[str, Any], what: str) -> ShmRef | None:
    """The region a tensor's parameters name, checked; None when they name none."""
    region = params.get(REGION)
    if region is None:
        if BYTE_SIZE in params or OFFSET in params:
            raise InvalidInput(f"{what}: '{BYTE_SIZE}' / '{OFFSET}' given without '{REGION}'")
        return None
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{what}: '{REGION}' must be a region's name, got {region!r}")
    return ShmRef(region, _count(params, OFFSET, what, 0), _count(params, BYTE_SIZE, what, None))


def path_of(key: Any) -> str:
    """The file behind a key (``/name`` or ``name``), which must name an object directly in /dev/shm."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"shared-memory key must be a non-empty string, got {key!r}")
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise InvalidInput(f"shared-memory key {key!r} does not name an object in {SHM_DIR}")
    return os.path.join(SHM_DIR, name)


def open_object(key: str, ino: int | None = None) -> tuple[int, os.stat_result]:
    """Open the object ``key`` read-write (never through a link); with ``ino``, it must be that file.
    Returns the descriptor (the caller closes it) and its stat."""
    path = path_of(key)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput(f"no shared-memory object {key!r} ({path})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open shared-memory object {key!r} ({path}): {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (ino is not None and st.st_ino != ino):
        os.close(fd)
        why = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "was replaced since it was registered"
        raise InvalidInput(f"shared-memory object {key!r} {why}")
    return fd, st


def map_object(key: str, start: int = 0, end: int = 0, ino: int | None = None) -> tuple[mmap.mmap, os.stat_result]:
    """Map bytes [start, end) of object ``key`` (end 0: to its end; start a multiple of the allocation
    granularity), read-write and shared."""
    fd, st = open_object(key, ino)
    try:
        if end > st.st_size:
            raise InvalidInput(f"shared-memory object {key!r} holds {st.st_size} bytes, fewer than the {end} needed")
        length = (end or st.st_size) - start
        if length <= 0:
            raise InvalidInput(f"shared-memory object {key!r} is empty")
        return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=start), st
    finally:
        os.close(fd)


def release(mm: mmap.mmap) -> None:
    """Unmap now if nothing still points into it; otherwise when the last array that does goes away."""
    with contextlib.suppress(BufferError):
        mm.close()


def write_into(view: memoryview, data: bytes | memoryview | np.ndarray) -> int:
    """Copy ``data`` (an array's raw bytes) to the start of ``view``; returns the bytes written."""
    src = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).cast("B")
    view[: src.nbytes] = src
    return src.nbytes


class Maps:
    """A worker's mappings of the shared-memory objects its requests name, one per object (key and
    inode), the least recently used unmapped past ``limit``. The frontend says when a key's regions
    are unregistered (:meth:`forget`), so a worker holds a client's memory no longer than the server
    does; mapping per request instead cost ~0.25 ms a request at one client (digits-mlp)."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._maps: OrderedDict[tuple[str, int], mmap.mmap] = OrderedDict()
        self._lock = threading.Lock()

    def view(self, span: Span) -> memoryview:
        """This process's view of ``span`` (the object mapped whole, once)."""
        with self._lock:
            mm = self._maps.get((span.key, span.ino))
            if mm is None or span.start + span.nbytes > len(mm):  # new, or grown since it was mapped
                if mm is not None:
                    release(self._maps.pop((span.key, span.ino)))
                mm, _ = map_object(span.key, ino=span.ino)
                self._maps[(span.key, span.ino)] = mm
                while len(self._maps) > self.limit:
                    release(self._maps.popitem(last=False)[1])
            self._maps.move_to_end((span.key, span.ino))
            if span.start + span.nbytes > len(mm):
                raise InvalidInput(f"{span} runs past shared-memory object {span.key!r} ({len(mm)} bytes)")
            # the view is taken under the lock: a concurrent forget() then leaves the mapping to it
            return memoryview(mm)[span.start : span.start + span.nbytes]

    def array(self, tensor: ShmTensor) -> np.ndarray:
        """The tensor, read in place (no copy)."""
        if tensor.nbytes != tensor.span.nbytes:
            raise InvalidInput(f"a tensor of {tensor.nbytes} bytes in a span of {tensor.span.nbytes}")
        return np.frombuffer(self.view(tensor.span), dtype=np.dtype(tensor.dtype)).reshape(tensor.shape)

    def write(self, span: Span, arr: np.ndarray) -> ShmTensor:
        """Write ``arr`` into ``span`` (which must hold it); returns where it now lies."""
        if arr.nbytes > span.nbytes:
            raise InvalidInput(f"an output of {arr.nbytes} bytes does not fit its shared-memory span of {span.nbytes}")
        written = Span(span.key, span.ino, span.start, write_into(self.view(span), arr))
        return ShmTensor(written, arr.dtype.str, tuple(arr.shape))

    def forget(self, key: str) -> None:
        """Unmap ``key`` (once no request still reads it): its regions were unregistered."""
        with self._lock:
            for k in [k for k in self._maps if k[0] == key]:
                release(self._maps.pop(k))


@dataclass(frozen=True, slots=True)
class Shared:
    """A request's tensors in shared memory, as a worker on the same machine takes them: the inputs it
    reads in place and the spans it writes outputs to."""

    inputs: dict[str, ShmTensor]
    outputs: dict[str, Span]

    @classmethod
    def of(cls, inputs: list, outputs: list | None) -> Shared | None:
        """From a bound request's inputs and requested outputs; None when nothing lies in a region."""
        ins = {i.name: ShmTensor(i.span, i.data.dtype.str, tuple(i.data.shape)) for i in inputs if i.span is not None}
        outs = {o.name: o.place.span for o in outputs or () if o.place is not None}
        return cls(ins, outs) if ins or outs else None
