"""deploy/prometheus/alerts.yml and deploy/grafana/gpt-trader.json only name metrics the code registers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gpt_trader.monitoring.metrics import MonitoringMetrics
from gpt_trader.realtime.health import RealtimeMetrics

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "gpt-trader.json"
# Our metrics all share the prefix, so any identifier starting with it is a metric name (never a function or label).
METRIC_TOKEN = re.compile(r"\bgpt_trader_[a-zA-Z0-9_]+")


def _alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]


def _exported() -> set[str]:
    # A live session registers the real-time pipeline's metrics on the monitor's registry: one endpoint serves both.
    metrics = MonitoringMetrics(CollectorRegistry())
    RealtimeMetrics(metrics.registry)
    return metrics.exported_names()


def test_alert_rules_file_is_valid_prometheus_rules_shape() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in {"info", "warning", "error", "critical"}


@pytest.mark.parametrize(("source", "exprs"), [("alerts.yml", _alert_exprs()), ("gpt-trader.json", _dashboard_exprs())])
def test_deploy_file_metric_names_all_registered_by_code(source: str, exprs: list[str]) -> None:
    exported = _exported()
    named = {token for expr in exprs for token in METRIC_TOKEN.findall(expr)}
    assert len(named) >= 5, f"{source}: expected several metrics, found {named}"
    unknown = sorted(named - exported)
    assert not unknown, f"{source} names metrics the code does not export: {unknown}"


def test_dashboard_covers_every_metric_family() -> None:
    # Catches the reverse drift: a metric added in code but never charted.
    named = {token for expr in _dashboard_exprs() for token in METRIC_TOKEN.findall(expr)}
    families = {f.name for f in MonitoringMetrics(CollectorRegistry()).registry.collect()}
    uncharted = sorted(f for f in families if not any(n == f or n.startswith(f + "_") for n in named))
    assert uncharted == []
