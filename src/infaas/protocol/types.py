"""Protocol-agnostic inference request and response (what REST and gRPC decode into).

An input's tensor may be decoded lazily: the codecs check the header (name, datatype, shape,
byte size) and leave costly decoding (JSON lists, BYTES elements, typed gRPC contents) in
``pending``, so the server checks the request against the model's signature before paying for
it, and can decode large tensors off the event loop (:func:`materialize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infaas.protocol.shm import ShmRef, Span


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None
    parameters: dict[str, Any] = field(default_factory=dict)
    pending: Callable[[], np.ndarray] | None = None  # decodes ``data`` (raises InvalidInput)
    shm: ShmRef | None = None  # the client's shared-memory region it lies in (``data`` read from there)
    span: Span | None = None  # where that is, once bound (a local worker reads it in place)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def decode(self) -> np.ndarray:
        if self.data is None:
            assert self.pending is not None, f"input {self.name} has neither data nor a decoder"
            self.data, self.pending = self.pending(), None
        return self.data


def materialize(inputs: list[InferInput]) -> None:
    """Decode every input that is still pending (in place)."""
    for inp in inputs:
        inp.decode()


def costly(inputs: list[InferInput], elements: int = 1 << 16) -> bool:
    """Whether decoding what is pending is worth a thread (off the event loop)."""
    return sum(i.elements for i in inputs if i.data is None) >= elements


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request-level default
    parameters: dict[str, Any] = field(default_factory=dict)
    shm: ShmRef | None = None  # the client's shared-memory region it goes to
    place: Placed | None = None  # where that is, once bound


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a requested output goes: the region (by name, as the response reports it), the span a
    local worker writes to, and this process's view of the same bytes."""

    region: str
    span: Span
    view: memoryview


@dataclass(slots=True)
class InferRequest:
    model: str
    version: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() by which the caller stops waiting (gRPC deadline)
    arrival: float | None = None  # time.monotonic() when the door first saw it: deadlines count from here
    via: str = ""  # the door it came through (rest, grpc); empty for in-process callers (jobs)


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    binary: bool = False
    region: str | None = None  # written to this shared-memory region of the client's, not sent


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
