"""deploy/grafana/infaas.json and deploy/prometheus.yml: importable by Grafana, and every PromQL
expression names series the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from infaas.decisions import DecisionLog
from infaas.serving.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exported_series() -> set[str]:
    """Every sample name the server's /metrics can carry, from a Metrics with one of each thing."""
    log = DecisionLog(10)
    log.log_decision("add_worker", "overloaded")
    log.log_decision("select", "cheapest", scope="task t", variant="v")
    metrics = Metrics(lambda: [("v", "w0", 2)], lambda: [("w0", True, 1)], decisions=lambda: (log.counts, log.not_kept))
    metrics.success("t", "v", 1, 2_000_000, 500_000, 1_000_000, 4, True)
    metrics.failure("t", "v", 503, 1_000_000)
    metrics.door_refused.labels("rest", "inflight").inc()
    text = metrics.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_panel_queries_series_the_server_exports():
    board = json.loads((DEPLOY / "grafana" / "infaas.json").read_text())
    exported = exported_series()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in board["annotations"]["list"]]
    named = {name for e in exprs for name in re.findall(r"\binfaas_[a-z_]+\b", e)}
    assert named, exprs
    assert named <= exported, named - exported
    wanted = ("infaas_requests_total", "infaas_request_duration_seconds_bucket", "infaas_queue_depth_requests")
    assert set(wanted) | {"infaas_replicas", "infaas_worker_up", "infaas_decisions_total"} <= named


def test_the_dashboard_has_what_grafana_import_needs():
    board = json.loads((DEPLOY / "grafana" / "infaas.json").read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    for p in board["panels"]:
        assert p["type"] and p["title"] and {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert p["datasource"]["uid"] == "${datasource}"  # the variable, not one install's uid
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
    for a in board["annotations"]["list"]:
        assert a["datasource"]["uid"] == "${datasource}" and a["expr"]


def test_prometheus_scrapes_the_metrics_endpoint():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "infaas"]
    assert job["metrics_path"] == "/metrics"
    assert all(":" in t for sc in job["static_configs"] for t in sc["targets"])
