"""Failover, end to end, as ``bench/cluster/failover`` runs it (shorter phases): two frontends on Redis,
a Ray cluster of three 1-CPU nodes with Ray's token authentication on, open-loop traffic to the follower;
SIGKILL the leader, then the raylet of a node hosting a worker. Nothing accepted may be lost, the follower
must take the lead, and the worker count must come back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]
pytest.importorskip("ray")
pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parents[2]


def test_leader_and_node_loss_lose_no_request(tmp_path):
    out = tmp_path / "failover.json"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # Ray's own authentication, a token made for the run
    env.pop("RAY_AUTH_TOKEN", None)
    cmd = [sys.executable, str(ROOT / "bench/cluster/failover.py"), "--rate", "20", "--phase-s", "8", "--no-plot"]
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["ray_auth_mode"] == "token"
    assert result["lost"] == 0, result["phases"]
    assert result["lead_after_s"] is not None and result["lead_after_s"] < 2 * 5 + 2  # within two lease periods
    assert result["token"]["after"] > result["token"]["before"]  # a new fencing token
    assert result["workers_back_after_s"] is not None, result
    phases = result["phases"]
    assert all(p["sent"] > 0 for p in phases.values())
    assert phases["steady"]["ok_share"] >= 0.9, phases["steady"]
    # the leader's death costs the follower's clients nothing: the workers serve on
    assert phases["leader-killed"]["ok_share"] >= 0.9, phases["leader-killed"]
    for p in phases.values():  # every refusal said why
        refused = sum(v for k, v in p["statuses"].items() if k != "200")
        assert refused == 0 or p["refusal_reasons"], p
