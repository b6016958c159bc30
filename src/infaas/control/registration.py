"""Registration as a service: add and remove architectures, and follow the store when another
frontend (a shared Redis store) or another process (``infaas register --data-dir``) writes it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from infaas.catalog import Catalog
from infaas.control.placement import Placement
from infaas.control.profiling import Profiling
from infaas.decisions import Background, DecisionLog
from infaas.errors import InfaasError, NotFound
from infaas.registry import Architecture, Registry, Variant
from infaas.settings import Settings

log = logging.getLogger("infaas.registration")


class Registration:
    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        settings: Settings,
        placement: Placement,
        profiling: Profiling,
        decisions: DecisionLog,
        background: Background,
        serving: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.settings = settings
        self.placement = placement
        self.profiling = profiling
        self.decisions = decisions
        self.background = background
        self.serving = serving  # whether the server has started (a new architecture is loaded at once then)

    async def register(self, **kwargs: Any) -> tuple[Architecture, Variant]:
        if kwargs.get("threads") is None:  # the baseline fits a worker's cores
            kwargs["threads"] = self.placement.cluster.cores_per_worker
        async with self.placement.busy_section():
            arch, variant = await asyncio.to_thread(self.registry.register, **kwargs)
        self.catalog.refresh()
        self.decisions.log_decision(
            "register",
            f"registered {arch.name} for task {arch.task} (accuracy {arch.accuracy} {arch.accuracy_source})",
            architecture=arch.name,
        )
        if self.serving():
            await self.placement.ensure_loaded(arch.name)
        if self.settings.profile_on_register:
            self.profiling.start(arch.name)
        return arch, variant

    async def remove(self, arch: str) -> None:
        if arch not in self.catalog.architectures:
            raise NotFound(f"unknown architecture '{arch}'")
        await self.placement.unplace_architecture(arch)
        await asyncio.to_thread(self.registry.remove, arch)
        self.catalog.refresh()
        self.decisions.log_decision("remove", f"removed architecture {arch}", architecture=arch)

    async def load_all(self) -> None:
        """At start: each architecture's default variant, loaded; one bad model does not keep the
        server from serving the others."""
        for arch in list(self.catalog.architectures):
            try:
                await self.placement.ensure_loaded(arch)
            except InfaasError as exc:
                log.error("cannot load %s at start: %s", arch, exc.message)
                self.decisions.log_decision("error", f"cannot load {arch} at start: {exc.message}", architecture=arch)

    async def follow_store(self, period_s: float = 0.5) -> None:
        """Refresh the catalog when anyone writes the store: another frontend (a shared Redis store) or
        another process on the SQLite file (``infaas register --data-dir``)."""
        seen = self.registry.store.generation()
        while True:
            await asyncio.sleep(period_s)
            try:
                now = await asyncio.to_thread(self.registry.store.generation)
            except Exception as exc:  # the store is unreachable for a moment: serve from the catalog held
                log.warning("store generation unreadable: %s", exc)
                continue
            if now != seen:
                seen = now
                known = set(self.catalog.architectures)
                self.catalog.refresh()  # on the loop: requests never see a half-built catalog
                for arch in set(self.catalog.architectures) - known:  # registered through another frontend
                    self.background.spawn(self.placement.ensure_loaded(arch))
