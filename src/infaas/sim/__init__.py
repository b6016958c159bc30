"""A discrete-event simulator that drives infaas's own policies, latency model, batching and
controller samples on a simulated clock: what would infaas do with a trace on a fleet, without
the fleet (``infaas sim``)."""

from infaas.sim.catalog import SimCatalog, parse_synthetic, synthetic
from infaas.sim.compare import simulate
from infaas.sim.engine import EventQueue, Outcome, ServiceTime, SimReplica, poisson_arrivals
from infaas.sim.fleet import Fleet, SimWorker
from infaas.sim.run import CONTENDERS, Simulation
from infaas.sim.scenario import Scenario

__all__ = [
    "CONTENDERS",
    "EventQueue",
    "Fleet",
    "Outcome",
    "ServiceTime",
    "Scenario",
    "SimCatalog",
    "SimReplica",
    "SimWorker",
    "Simulation",
    "parse_synthetic",
    "poisson_arrivals",
    "simulate",
    "synthetic",
]
