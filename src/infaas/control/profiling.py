"""Profiling as a service: generate and measure an architecture's variants in the background, one
architecture at a time, with a progress record per architecture; a variant that profiling rejects
gives way to the default one wherever it is loaded."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from infaas.catalog import Catalog
from infaas.cluster.base import ClusterBackend
from infaas.control.placement import Placement
from infaas.decisions import Background, DecisionLog
from infaas.errors import NotFound
from infaas.registry import Registry
from infaas.settings import Settings

log = logging.getLogger("infaas.profiling")


class Profiling:
    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        cluster: ClusterBackend,
        settings: Settings,
        placement: Placement,
        decisions: DecisionLog,
        background: Background,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.cluster = cluster
        self.settings = settings
        self.placement = placement
        self.decisions = decisions
        self.background = background
        self.states: dict[str, dict[str, Any]] = {}  # architecture -> its latest profiling's progress
        self._lock = asyncio.Lock()  # one profiling at a time: they would disturb each other

    def profile_new_kind(self) -> None:
        """Architectures profiled only on other hardware kinds get profiled on this one, in the
        background (their other-kind profiles are never used here)."""
        if not self.settings.profile_on_register:
            return
        for arch in self.catalog.unprofiled_here:
            self.decisions.log_decision(
                "profile",
                f"{arch} has no profiles for this machine's hardware kind "
                f"{self.catalog.kind.id} ({self.catalog.kind.describe()}); profiling it here",
                architecture=arch,
            )
            self.start(arch)

    def start(self, arch: str, quick: bool = False) -> dict[str, Any]:
        """Generate and profile an architecture's variants in the background; returns its progress record."""
        if arch not in self.catalog.architectures:
            raise NotFound(f"unknown architecture '{arch}'")
        state = self.states.get(arch)
        if state is not None and state["finished"] is None:
            return state
        state = {
            "architecture": arch,
            "quick": quick,
            "stage": "queued",
            "done": 0,
            "total": 0,
            "started": time.time(),
            "finished": None,
            "seconds": None,
            "error": None,
            "summary": None,
        }
        self.states[arch] = state
        self.background.spawn(self._profile(arch, quick, state), guarded=False)
        return state

    async def _profile(self, arch: str, quick: bool, state: dict[str, Any]) -> None:
        from infaas.profiler import profile_architecture

        def progress(what: str, done: int, total: int) -> None:
            state.update(stage=what, done=done, total=total)

        try:
            async with self._lock:
                report = await profile_architecture(
                    self.registry,
                    arch,
                    self.settings,
                    quick=quick,
                    progress=progress,
                    before_measure=self.placement.quiet.wait,
                    backend=self.cluster,
                )
            counts = {s: sum(v.status == s for v in report.variants) for s in ("ready", "rejected", "failed")}
            state["summary"] = {**counts, "skipped": {s.format: s.reason for s in report.skipped}}
            self.catalog.refresh()
            self.decisions.log_decision(
                "profile",
                f"profiled {arch} in {report.seconds:.1f} s: {counts['ready']} "
                f"variants ready, {counts['rejected']} rejected, {counts['failed']} failed "
                f"(reasons: infaas variants {arch})",
                architecture=arch,
            )
            await self._replace_rejected(arch)
        except asyncio.CancelledError:
            state["error"] = "cancelled (server stopping)"
            raise
        except Exception as exc:  # the server keeps serving
            log.exception("profiling %s failed", arch)
            state["error"] = f"{type(exc).__name__}: {exc}"
            self.decisions.log_decision("profile", f"profiling {arch} failed: {exc}", architecture=arch)
        finally:
            state["finished"] = time.time()
            state["seconds"] = round(state["finished"] - state["started"], 2)

    async def _replace_rejected(self, arch: str) -> None:
        """After profiling, a loaded variant that profiling rejected gives way to the default one."""
        best = self.placement.default_variant(arch)
        for v in self.catalog.by_arch.get(arch, []):
            if v.status != "ready" and best is not None and any(w.hosts(v.name) for w in self.cluster.workers):
                await self.placement.swap(
                    v,
                    best,
                    "replace",
                    f"{v.name} was rejected by profiling ({v.reason}); {best.name} serves in its place",
                )
