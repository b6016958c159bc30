"""The catalog (an in-memory view of the registry) and request checks shared by every protocol."""

from __future__ import annotations

from typing import Any

from infaas.errors import InvalidInput, NotFound
from infaas.frontend.types import InferRequest
from infaas.policy import Objective, Option, ScopeIndex
from infaas.registry import Architecture, Registry, Signature, Task, Variant


class Catalog:
    """An in-memory view of the registry, rebuilt after every registry write."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.refresh()

    def refresh(self) -> None:
        self.tasks: dict[str, Task] = {t.name: t for t in self.registry.tasks()}
        self.architectures: dict[str, Architecture] = {a.name: a for a in self.registry.architectures()}
        self.variants: dict[str, Variant] = {v.name: v for v in self.registry.variants()}
        self.profiles = {p.variant: p for p in self.registry.profiles()}
        self.by_arch: dict[str, list[Variant]] = {a: [] for a in self.architectures}
        for v in self.variants.values():
            self.by_arch.setdefault(v.architecture, []).append(v)
        # Triton-style numeric versions: each variant's rank in its architecture by creation time
        # (clients such as perf_analyzer read versions as integers); names work everywhere too.
        self.number: dict[str, int] = {}
        self.numbered: dict[tuple[str, int], Variant] = {}
        for arch, variants in self.by_arch.items():
            variants.sort(key=lambda v: (v.created_at, v.name))
            for i, v in enumerate(variants, 1):
                self.number[v.name] = i
                self.numbered[(arch, i)] = v
        self._options: dict[tuple[str, str | None], ScopeIndex] = {}
        self._names: dict[tuple[str, str | None], frozenset[str]] = {}

    def scope_names(self, name: str, version: str | None, variants: list[Variant]) -> frozenset[str]:
        """Names of every variant in a scope, loaded or not (cached until the next refresh)."""
        cached = self._names.get((name, version))
        if cached is None:
            cached = self._names[(name, version)] = frozenset(v.name for v in variants)
        return cached

    def options(self, name: str, version: str | None, variants: list[Variant]) -> ScopeIndex:
        """The scope's ready variants indexed by cost (cached until the next refresh)."""
        key = (name, version)
        cached = self._options.get(key)
        if cached is None:
            ready = [Option(v, self.profiles.get(v.name)) for v in variants if v.status == "ready"]
            cached = self._options[key] = ScopeIndex(ready)
        return cached

    def resolve(self, name: str, version: str | None) -> tuple[str, Signature, list[Variant], str]:
        """(scope text, signature, candidate variants, version reported) for a v2 model name."""
        if version:
            arch = self.architectures.get(name)
            if arch is None:
                raise NotFound(f"unknown architecture '{name}' (versions are variants of an architecture)")
            var = self.variants.get(version) or self.variants.get(f"{name}.{version}")
            if var is None and version.isdigit():
                var = self.numbered.get((name, int(version)))
            if var is None or var.architecture != name:
                raise NotFound(f"architecture '{name}' has no variant '{version}'")
            return f"variant {var.name}", arch.signature, [var], var.name
        if name in self.architectures:
            arch = self.architectures[name]
            return f"architecture {name}", arch.signature, self.by_arch.get(name, []), ""
        if name in self.tasks:
            variants = [v for a in self.architectures.values() if a.task == name
                        for v in self.by_arch.get(a.name, [])]  # fmt: skip
            return f"task {name}", self.tasks[name].signature, variants, ""
        if name in self.variants:
            var = self.variants[name]
            return (f"variant {name}", self.architectures[var.architecture].signature, [var], name)
        raise NotFound(f"unknown model '{name}': not a task, architecture or variant")


def check_inputs(req: InferRequest, sig: Signature) -> int:
    """Validate inputs against the signature; returns the batch size (rows)."""
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
            raise InvalidInput(f"input '{spec.name}': shape {list(inp.shape)}, expected {list(spec.shape)} "
                               "(-1 = any size; the first dimension is the batch)")  # fmt: skip
        if rows is None:
            rows = inp.shape[0]
        elif inp.shape[0] != rows:
            raise InvalidInput("inputs disagree on the batch size (first dimension)")
    if not rows:
        raise InvalidInput("batch size (first dimension) must be at least 1")
    return rows


def objective_from(params: dict[str, Any]) -> Objective:
    """Objectives travel in the request parameters: latency_ms, min_accuracy, max_cost, allow_estimated."""
    values: dict[str, Any] = {}
    for key, lo, hi in (("latency_ms", 0.0, None), ("min_accuracy", 0.0, 1.0), ("max_cost", 0.0, None)):
        raw = params.get(key)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise InvalidInput(f"parameter '{key}' must be a number")
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"parameter '{key}' must be a number, got {raw!r}") from None
        if value <= lo and key != "min_accuracy" or value < lo or (hi is not None and value > hi):
            raise InvalidInput(f"parameter '{key}' out of range: {value:g}")
        values[key] = value
    allow = params.get("allow_estimated", True)
    values["allow_estimated"] = allow if isinstance(allow, bool) else str(allow).lower() not in ("0", "false", "no")
    return Objective(**values)
