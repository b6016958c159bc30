"""Recipe search for a quantized format whose default recipe loses more than the bound: further
recipes (``SEARCH_STEPS``), then mixed precision (the most sensitive nodes kept in fp32), within
``quant_search_s``; the fastest recipe that meets the bound and beats fp32 wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from infaas.profiler import quality as Q
from infaas.profiler.measure import Measurement
from infaas.registry import Architecture, Registry
from infaas.settings import Settings
from infaas.variants.quantize import DEFAULT_RECIPES, SEARCH_STEPS, Quantizer, describe_recipe


def trial(recipe: dict, m: Measurement, q: Q.Quality | None, bound: float, verdict: str = "") -> dict:
    if not verdict:
        verdict = (
            "meets the bound"
            if q is not None and q.within(bound)
            else f"loses up to {q.loss_high:.4f}"
            if q is not None
            else (m.result or {}).get("not_evaluated") or m.error or "failed"
        )
    return {
        "recipe": describe_recipe(recipe),
        "params": recipe,
        "throughput": round(m.throughput, 1),
        "loss": None if q is None else round(q.loss, 5),
        "loss_high": None if q is None else round(q.loss_high, 5),
        "verdict": verdict,
    }


async def search_recipes(
    fmt: str,
    default: Measurement,
    parent: Measurement,
    q0: Q.Quality | None,
    registry: Registry,
    arch: Architecture,
    settings: Settings,
    measure: Callable,
    quality: Callable,
    say: Callable[[str], None],
) -> tuple[Measurement, Q.Quality | None, list[dict]]:
    """Recipes beyond the default, within the time budget; the fastest that meets the bound and is
    faster than fp32 wins. Mixed precision starts from the least lossy recipe faster than fp32."""
    bound = settings.max_accuracy_drop
    base = dict(default.artifact.params.get("recipe") or DEFAULT_RECIPES[fmt])
    log = [trial(base, default, q0, bound)]
    if q0 is None or q0.within(bound) or settings.quant_search_s <= 0:
        return default, q0, log
    if default.throughput <= parent.throughput:
        log.append(
            {
                "recipe": "(search)",
                "verdict": f"not searched: the default recipe is slower than fp32 "
                f"({default.throughput:.0f} vs {parent.throughput:.0f} rows/s); no recipe makes it worth keeping",
            }
        )
        return default, q0, log
    deadline = time.monotonic() + settings.quant_search_s
    passing: list[tuple[Measurement, Q.Quality]] = []
    lowest: tuple[float, dict, Measurement] = (q0.loss_high, base, default)
    with Quantizer(registry, arch) as quantizer:

        async def attempt(recipe: dict) -> tuple[Measurement, Q.Quality] | None:
            nonlocal lowest
            say(f"{fmt}: trying {describe_recipe(recipe)}")
            try:
                art = await asyncio.to_thread(quantizer.quantize, fmt, recipe)
            except ValueError as exc:
                log.append({"recipe": describe_recipe(recipe), "params": recipe, "verdict": str(exc)})
                return None
            m = Measurement(
                art, default.provider, default.threads, evaluate=True, min_throughput=default.min_throughput
            )
            await measure(m)
            if m.result is None:
                log.append(trial(recipe, m, None, bound))
                return None
            q = quality(m)
            faster = m.throughput > parent.throughput
            slow = (
                ""
                if faster or q is None or not q.within(bound)
                else (f"meets the bound but no faster than fp32 ({m.throughput:.0f} vs {parent.throughput:.0f} rows/s)")
            )
            log.append(trial(recipe, m, q, bound, slow))
            if q is None or not faster:  # a recipe slower than fp32 cannot win, nor seed mixed precision
                return None
            if q.loss_high < lowest[0]:
                lowest = (q.loss_high, recipe, m)
            return (m, q) if q.within(bound) else None

        for step in SEARCH_STEPS[fmt]:
            if time.monotonic() > deadline:
                log.append({"recipe": "(search)", "verdict": f"time budget of {settings.quant_search_s:.0f} s spent"})
                break
            if (hit := await attempt({**base, **step})) is not None:
                passing.append(hit)
        if not passing and time.monotonic() <= deadline:
            _, recipe, m = lowest
            hit = await _mixed_precision(quantizer, fmt, recipe, m, base, default, attempt, deadline, settings, log)
            if hit is not None:
                passing.append(hit)
    if not passing:
        return default, q0, log
    m, q = max(passing, key=lambda hit: hit[0].throughput)
    log.append({"recipe": m.artifact.params["recipe_text"], "verdict": "kept: the fastest recipe that meets the bound"})
    return m, q, log


async def _mixed_precision(
    quantizer: Quantizer,
    fmt: str,
    recipe: dict,
    m: Measurement,
    base: dict,
    default: Measurement,
    attempt: Callable,
    deadline: float,
    settings: Settings,
    log: list[dict],
) -> tuple[Measurement, Q.Quality] | None:
    """The most sensitive nodes of the least lossy recipe (``recipe``, measured as ``m``) stay in
    fp32: 1, 2, 4 ... of them (up to 64) until one meets the bound or the time is spent."""
    ranking = await asyncio.to_thread(quantizer.sensitivity, fmt, m.artifact)
    if not ranking and m is not default:  # that recipe quantizes nothing computed inside: the default's
        recipe, ranking = base, await asyncio.to_thread(quantizer.sensitivity, fmt, default.artifact)
    log.append(
        {
            "recipe": "(sensitivity)",
            "verdict": "most sensitive nodes: "
            + ", ".join(f"{'+'.join(names)} (+{score:.3f})" for names, score in ranking[:8]),
        }
    )
    k = 1
    while k <= min(len(ranking), 64):
        if time.monotonic() > deadline:
            log.append({"recipe": "(search)", "verdict": f"time budget of {settings.quant_search_s:.0f} s spent"})
            return None
        if (
            hit := await attempt({**recipe, "exclude": [name for names, _ in ranking[:k] for name in names]})
        ) is not None:
            return hit
        k *= 2
    return None
