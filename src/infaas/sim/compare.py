"""Every contender on one scenario: the inputs checked once, each contender simulated on the same
trace, fleet and seed, and each one's cost set against the oracle bound."""

from __future__ import annotations

from collections.abc import Callable

from infaas.sim.oracle import oracle
from infaas.sim.run import Simulation
from infaas.sim.scenario import Scenario


def simulate(
    contenders: list[str], scenario: Scenario, progress: Callable[[str, int, int], None] | None = None
) -> dict:
    """Every contender on the same trace, fleet and seed: the JSON the CLI writes (no wall-clock figure)."""
    scenario.check()
    results = []
    for name in contenders:
        tell = None if progress is None else (lambda done, total, name=name: progress(name, done, total))
        results.append(Simulation(name, scenario, tell).run())
    s = scenario
    bound = oracle(s.catalog, s.apps, s.trace, s.fleet)
    for r in results:
        r["cost_vs_oracle"] = round(r["cost_usd"] / bound["cost_usd"], 4) if bound["cost_usd"] else None
    return {
        "oracle": bound,
        "fleet": s.fleet.describe(),
        "hardware": s.catalog.hardware,
        "seed": s.seed,
        "trace": {"requests": len(s.trace), "seconds": round(s.trace[-1][0], 6) if s.trace else 0.0},
        "contenders": results,
    }
