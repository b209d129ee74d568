"""Health score: the documented formula, its bounds and its monotonicity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertRule, AlertSeverity
from gpt_trader.monitoring.config import HealthConfig
from gpt_trader.monitoring.health import HealthInputs, compute_health, ramp
from gpt_trader.monitoring.system import SystemMonitor


def test_ramp_edges_and_midpoint_are_linear() -> None:
    assert ramp(5, 10, 20) == 100
    assert ramp(15, 10, 20) == 50
    assert ramp(25, 10, 20) == 0


def test_health_all_good_scores_100_healthy() -> None:
    report = compute_health(HealthInputs(data_age_secs=1, error_ratio=0, latency_p95_ms=3, resource_percent=40))
    assert (report.score, report.status) == (100.0, "healthy")
    assert set(report.components) == {"freshness", "errors", "latency", "resources", "alerts"}


def test_health_no_data_counts_only_alerts() -> None:
    report = compute_health(HealthInputs())
    assert report.components == {"alerts": 100.0}
    assert report.score == 100.0


def test_health_weighted_mean_matches_formula() -> None:
    cfg = HealthConfig()  # weights .25 .20 .20 .15 .20; budgets 60 s, 1-10 %, 10 ms, 80-95 %
    inputs = HealthInputs(
        data_age_secs=120,  # ramp(120, 60, 180) = 50
        error_ratio=0.055,  # ramp(.055, .01, .10) = 50
        latency_p95_ms=20,  # ramp(20, 10, 20) = 0
        resource_percent=50,  # 100
        active_alerts={AlertSeverity.WARNING: 1, AlertSeverity.ERROR: 1},  # 100 - 10 - 25 = 65
    )
    report = compute_health(inputs, cfg)
    expected = 0.25 * 50 + 0.20 * 50 + 0.20 * 0 + 0.15 * 100 + 0.20 * 65
    assert report.score == pytest.approx(expected, abs=0.01)
    assert report.score == 50.5
    assert report.status == "degraded"  # 50 <= score < 80


def test_health_critical_alert_caps_score_at_50() -> None:
    report = compute_health(
        HealthInputs(
            data_age_secs=0,
            error_ratio=0,
            latency_p95_ms=1,
            resource_percent=1,
            active_alerts={AlertSeverity.CRITICAL: 1},
        )
    )
    assert report.components["alerts"] == 50.0
    assert report.score == 50.0
    assert report.status == "degraded"


@given(
    age=st.floats(0, 1e4),
    err=st.floats(0, 1),
    lat=st.floats(0, 1e3),
    res=st.floats(0, 100),
    warnings=st.integers(0, 20),
    criticals=st.integers(0, 3),
)
def test_health_score_bounded_and_worse_inputs_never_raise_it(
    age: float, err: float, lat: float, res: float, warnings: int, criticals: int
) -> None:
    alerts = {AlertSeverity.WARNING: warnings, AlertSeverity.CRITICAL: criticals}
    base = compute_health(HealthInputs(age, err, lat, res, alerts))
    worse = compute_health(HealthInputs(age * 2 + 1, min(1.0, err * 2), lat * 2 + 1, min(100.0, res + 5), alerts))
    assert 0 <= base.score <= 100
    assert worse.score <= base.score


def test_monitor_health_reflects_stale_data_and_slow_model(monitor: SystemMonitor, clock: SimClock) -> None:
    monitor.record_pipeline_metrics(ticks_ingested=500, errors=0)
    for _ in range(100):
        monitor.record_prediction("tf", latency_ms=2.0)
    fresh = monitor.health()
    assert fresh.components["freshness"] == 100
    assert fresh.components["latency"] == 100
    clock.advance(timedelta(seconds=180))  # 3x the data-age budget
    for _ in range(100):
        monitor.record_prediction("tf", latency_ms=25.0)
    stale = monitor.health()
    assert stale.components["freshness"] == 0
    assert stale.components["latency"] == 0
    assert stale.score < fresh.score
    assert monitor.registry.get_sample_value("gpt_trader_health_component_score", {"component": "freshness"}) == 0


def test_monitor_health_counts_active_alerts(monitor: SystemMonitor) -> None:
    monitor.alert_manager.add_rule(
        AlertRule(
            name="loss", metric_name="trading.daily_pnl", condition="lt", threshold=0, severity=AlertSeverity.ERROR
        )
    )
    monitor.record_trading_metrics(daily_pnl=-1)
    assert monitor.health().components["alerts"] == 75.0
