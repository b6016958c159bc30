"""The catalog (an in-memory view of the registry) and request checks shared by every protocol."""

from __future__ import annotations

from infaas.errors import NotFound
from infaas.hardware import HardwareKind, local_kind
from infaas.policy import Option, ScopeIndex
from infaas.registry import Architecture, Profile, Registry, Signature, Task, Variant


class Catalog:
    """An in-memory view of the registry for one hardware kind, rebuilt after every registry write.

    A profile is used only on the kind it was measured on: each variant shows the verdict (status,
    reason, accuracy) of its profile on ``kind``; a variant profiled only on other kinds is
    ``pending`` here until it is profiled on this one (the registered baseline still serves)."""

    def __init__(self, registry: Registry, kind: HardwareKind | None = None) -> None:
        self.registry = registry
        self.kind = kind or local_kind()
        self.refresh()

    def use_kind(self, kind: HardwareKind) -> None:
        """Serve with ``kind``'s profiles (the workers' kind, known once they have started)."""
        if kind.id != self.kind.id:
            self.kind = kind
            self.refresh()

    def refresh(self) -> None:
        self.tasks: dict[str, Task] = {t.name: t for t in self.registry.tasks()}
        self.architectures: dict[str, Architecture] = {a.name: a for a in self.registry.architectures()}
        profiles = {(p.variant, p.hardware): p for p in self.registry.profiles()}
        self.profiles: dict[str, Profile] = {}
        elsewhere: dict[str, set[str]] = {}
        for variant, hardware in profiles:
            elsewhere.setdefault(variant, set()).add(hardware)
        self.variants: dict[str, Variant] = {}
        for v in self.registry.variants():
            mine = self.kind.for_provider(v.provider)
            p = profiles.get((v.name, mine))
            if p is not None:
                self.profiles[v.name] = p
                v = v.model_copy(
                    update={
                        "status": p.status,
                        "reason": p.reason,
                        "accuracy": p.accuracy,
                        "accuracy_source": p.accuracy_source,
                    }
                )
            elif v.name in elsewhere and v.parent is not None:  # the registered graph itself still serves
                v = v.model_copy(
                    update={
                        "status": "pending",
                        "reason": (
                            f"profiled on {', '.join(sorted(elsewhere[v.name]))} only; not yet on this machine's kind {mine}"
                        ),
                    }
                )
            self.variants[v.name] = v
        # architectures whose variants have profiles, none of them on this kind: to be profiled here
        self.unprofiled_here = sorted(
            {v.architecture for v in self.variants.values() if v.name in elsewhere and v.name not in self.profiles}
            - {v.architecture for v in self.variants.values() if v.name in self.profiles}
        )
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
        self.known_names = frozenset(self.tasks) | frozenset(self.architectures) | frozenset(self.variants)
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
            variants = [v for a in self.architectures.values() if a.task == name for v in self.by_arch.get(a.name, [])]
            return f"task {name}", self.tasks[name].signature, variants, ""
        if name in self.variants:
            var = self.variants[name]
            return (f"variant {name}", self.architectures[var.architecture].signature, [var], name)
        raise NotFound(f"unknown model '{name}': not a task, architecture or variant")
