"""A discrete-event simulator that drives infaas's own batching (and, next, its policies) on a
simulated clock: what would infaas do with a trace on a fleet, without the fleet."""

from infaas.sim.engine import EventQueue, Outcome, ServiceTime, SimReplica, poisson_arrivals

__all__ = ["EventQueue", "Outcome", "ServiceTime", "SimReplica", "poisson_arrivals"]
