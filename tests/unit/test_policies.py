"""The one policy interface: both policies are chosen by name and called the same way."""

import pytest

from infaas.policy import ScalingConfig
from infaas.policy.autoscale import Memory
from infaas.policy.original import OriginalMemory
from infaas.policy.policies import InfaasPolicy, OriginalPolicy, policy_named, with_min_workers


def test_policies_are_chosen_by_name_with_the_scaling_thresholds():
    cfg = ScalingConfig(scale_down_s=3.0, keep_warm=False)
    ours, original = policy_named("infaas", cfg), policy_named("infaas-original", cfg)
    assert isinstance(ours, InfaasPolicy) and ours.scaling is cfg and ours.learns_latency
    assert isinstance(original, OriginalPolicy) and not original.learns_latency
    assert original.original.keep_warm is False  # the original's own config follows the shared keep_warm
    assert isinstance(ours.memory(), Memory) and isinstance(original.memory(), OriginalMemory)
    with pytest.raises(ValueError, match="unknown policy 'clipper'"):
        policy_named("clipper", cfg)


def test_each_policy_judges_overload_its_own_way():
    """Ours flags what its state report calls overloaded; the original flags only what its own
    hysteresis flagged, whatever the shared report says."""
    ours, original = policy_named("infaas", ScalingConfig()), policy_named("infaas-original", ScalingConfig())
    judged = {"v": ("overloaded", "demand 900/s > 760/s"), "w": ("ok", "within capacity")}
    assert ours.overloaded(ours.memory(), judged) == {"v": "demand 900/s > 760/s"}
    mem = OriginalMemory(flagged={"w": "avg latency 30 ms > 2.5 L", "x": "backlog"})
    assert original.overloaded(mem, judged) == {"w": "avg latency 30 ms > 2.5 L", "x": "backlog"}


def test_a_removed_worker_is_forgotten_and_the_floor_is_set_once_known():
    ours = policy_named("infaas", ScalingConfig())
    mem = Memory(empty_since={"w1": 5.0, "w2": 6.0})
    ours.worker_removed(mem, "w1")
    assert mem.empty_since == {"w2": 6.0}
    assert with_min_workers(ours, 3).scaling.min_workers == 3 and ours.scaling.min_workers == 1
