"""Requests checked against a model's signature, before any tensor is decoded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infaas.errors import InvalidInput
from infaas.protocol.types import InferRequest

if TYPE_CHECKING:
    from infaas.registry.types import Signature


def check_inputs(req: InferRequest, sig: Signature) -> int:
    """Check inputs against the signature (names, datatypes, shapes: nothing is decoded); returns
    the batch size (rows)."""
    given = {i.name: i for i in req.inputs}
    expected = {s.name for s in sig.inputs}
    if len(given) != len(req.inputs):
        raise InvalidInput("an input name appears twice")
    if missing := expected - set(given):
        raise InvalidInput(f"missing input(s) {sorted(missing)}; '{req.model}' expects {sorted(expected)}")
    if extra := set(given) - expected:
        raise InvalidInput(f"unexpected input(s) {sorted(extra)}; '{req.model}' expects {sorted(expected)}")
    rows = None
    for spec in sig.inputs:
        inp = given[spec.name]
        if inp.datatype != spec.datatype:
            raise InvalidInput(f"input '{spec.name}': datatype {inp.datatype}, expected {spec.datatype}")
        if len(inp.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, inp.shape, strict=True)
        ):
            raise InvalidInput(
                f"input '{spec.name}': shape {list(inp.shape)}, expected {list(spec.shape)} "
                "(-1 = any size; the first dimension is the batch)"
            )
        if rows is None:
            rows = inp.shape[0]
        elif inp.shape[0] != rows:
            raise InvalidInput("inputs disagree on the batch size (first dimension)")
    if not rows:
        raise InvalidInput("batch size (first dimension) must be at least 1")
    return rows
