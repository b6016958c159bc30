"""The server's registered system shared-memory regions (Triton's ``systemsharedmemory`` extension).

A client registers a region of a POSIX shared-memory object under a name; requests then name the
region (an offset and a byte size in it) for an input's bytes or an output's destination. The
router binds a request to its regions before anything else reads it (:meth:`Regions.bind`) and
writes outputs that a worker did not write itself (:meth:`Regions.deliver`). Every offset and size
is checked against the region, so nothing is read or written outside it. Regions belong to this
server: unregistering unmaps one (once no request still reads it), and so does shutting down.
"""

from __future__ import annotations

import gc
import mmap
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infaas.errors import InvalidInput
from infaas.protocol.codec import tensor_from_bytes, tensor_to_bytes
from infaas.protocol.shm import ShmRef, ShmTensor, Span, map_object, release, write_into
from infaas.protocol.types import InferOutput, InferRequest, Placed
from infaas.tensors import V2_TO_NUMPY, itemsize

MAX_REGIONS = 1024  # per server: each holds a mapping (and the client's memory) until unregistered


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    ino: int
    mm: mmap.mmap  # the object's bytes [base_off, offset + byte_size)
    base: int  # where the region starts in ``mm`` (offset less the page-aligned start of the mapping)

    def status(self) -> dict:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def take(self, ref: ShmRef, what: str) -> tuple[Span, memoryview]:
        """The span a request names in this region, and this process's view of it (bounds checked)."""
        if ref.offset + ref.byte_size > self.byte_size:
            raise InvalidInput(
                f"{what}: offset {ref.offset} + byte size {ref.byte_size} runs past shared-memory region "
                f"'{self.name}' ({self.byte_size} bytes)"
            )
        start = self.base + ref.offset
        view = memoryview(self.mm)[start : start + ref.byte_size]
        return Span(self.key, self.ino, self.offset + ref.offset, ref.byte_size), view


class Regions:
    """Name -> registered region, thread-safe (register and unregister may run beside requests)."""

    def __init__(self, limit: int = MAX_REGIONS, released: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.released = released  # told each object (key) whose region is unregistered: workers unmap it
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    # ---- the extension's endpoints --------------------------------------------------------------
    def register(self, name: object, key: object, offset: object, byte_size: object) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"a shared-memory region needs a name, got {name!r}")
        for what, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"region '{name}': {what} must be a non-negative integer, got {value!r}")
        assert isinstance(offset, int) and isinstance(byte_size, int)
        if byte_size == 0:
            raise InvalidInput(f"region '{name}': byte_size must be positive")
        with self._lock:  # checked again below: the mapping is made outside the lock
            self._check_free(name)
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        mm, st = map_object(key, base, offset + byte_size)  # type: ignore[arg-type]  # checks the key
        region = Region(name, str(key), offset, byte_size, st.st_ino, mm, offset - base)
        with self._lock:
            try:
                self._check_free(name)
            except InvalidInput:
                release(mm)
                raise
            self._regions[name] = region

    def _check_free(self, name: str) -> None:
        if name in self._regions:
            raise InvalidInput(f"shared-memory region '{name}' is already registered: unregister it first")
        if len(self._regions) >= self.limit:
            raise InvalidInput(f"{self.limit} shared-memory regions are registered, the most this server holds")

    def unregister(self, name: str | None = None) -> list[str]:
        """Unregister one region (an unknown name is no error, as in Triton) or, with None, all."""
        with self._lock:
            names = list(self._regions) if name is None else [name] if name in self._regions else []
            gone = [self._regions.pop(n) for n in names]
        for region in gone:
            try:
                region.mm.close()
            except BufferError:  # an array still reads it: a finished request held in a cycle (an error's
                gc.collect()  # traceback) lets go now; one still in flight does when it ends
                release(region.mm)
            if self.released is not None:
                self.released(region.key)
        return names

    def status(self, name: str | None = None) -> list[dict]:
        with self._lock:
            if name is None:
                return [r.status() for r in self._regions.values()]
            return [self._get(name, "status").status()]

    def close(self) -> None:
        self.unregister(None)

    def _get(self, name: str, what: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise InvalidInput(f"{what}: no shared-memory region named '{name}' is registered")
        return region

    # ---- requests ---------------------------------------------------------------------------------
    def bind(self, req: InferRequest) -> None:
        """Read each input that lies in a region (in place: the array is a view of the region) and note
        where each output that goes to one is to be written. Raises InvalidInput for an unknown region,
        bounds outside it, or a byte size that does not match the tensor."""
        for inp in req.inputs:
            if inp.shm is None:
                continue
            what = f"input '{inp.name}'"
            span, view = self._take(inp.shm, what)
            if inp.datatype == "BYTES":
                inp.pending = _bytes_thunk(view, inp.shape, inp.name)
                continue
            expected = inp.elements * itemsize(inp.datatype)
            if inp.shm.byte_size != expected:
                raise InvalidInput(
                    f"{what}: shared_memory_byte_size {inp.shm.byte_size}, but shape {list(inp.shape)} of "
                    f"{inp.datatype} is {expected} bytes"
                )
            inp.data = np.frombuffer(view, dtype=V2_TO_NUMPY[inp.datatype]).reshape(inp.shape)
            inp.span = span
        for out in req.outputs or ():
            if out.shm is not None:
                span, view = self._take(out.shm, f"output '{out.name}'")
                out.place = Placed(out.shm.region, span, view)

    def _take(self, ref: ShmRef, what: str) -> tuple[Span, memoryview]:
        with self._lock:
            region = self._get(ref.region, what)
        return region.take(ref, what)


def deliver(req: InferRequest, outputs: list[InferOutput]) -> None:
    """Write each output that goes to a region and is not there yet; the response then carries no data for it."""
    wanted = {o.name: o.place for o in req.outputs or () if o.place is not None}
    for out in outputs:
        place = wanted.get(out.name)
        if place is None:
            continue
        if isinstance(out.data, ShmTensor):  # written by the worker, in place
            if out.data.span.key != place.span.key or out.data.span.start != place.span.start:
                raise InvalidInput(f"output '{out.name}' was written to {out.data.span}, not {place.span}")
        else:
            blob = tensor_to_bytes(out.data, out.datatype) if out.datatype == "BYTES" else out.data
            size = len(blob) if isinstance(blob, bytes) else blob.nbytes
            if size > len(place.view):
                raise InvalidInput(
                    f"output '{out.name}' is {size} bytes; its shared-memory span in region '{place.region}' "
                    f"holds {len(place.view)}"
                )
            write_into(place.view, blob)
        out.region = place.region


def _bytes_thunk(view: memoryview, shape: tuple[int, ...], name: str):
    return lambda: tensor_from_bytes(view, "BYTES", shape, name)
