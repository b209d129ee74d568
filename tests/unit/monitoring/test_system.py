"""SystemMonitor: the seed's Example 4, recording, derived metrics, sampling, /metrics and lifecycle."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring import AlertRule, AlertSeverity, SystemMonitor
from gpt_trader.monitoring.config import ExporterConfig, MonitoringConfig, SamplerConfig
from gpt_trader.monitoring.metrics import CATALOGUE, prometheus_name


def test_example4_verbatim_then_big_loss_fires_critical() -> None:
    # The seed's Example 4, with only the import root changed.
    from gpt_trader.monitoring import AlertRule, AlertSeverity, SystemMonitor

    # Create monitor
    monitor = SystemMonitor()

    # Add custom alert rule
    rule = AlertRule(
        name="high_loss",
        metric_name="trading.daily_pnl",
        condition="lt",
        threshold=-5000,
        severity=AlertSeverity.CRITICAL,
    )
    monitor.alert_manager.add_rule(rule)

    # Start monitoring
    monitor.start()

    # Record metrics
    monitor.record_trading_metrics(portfolio_value=150000, daily_pnl=2500, position_count=10, trade_count=50)

    try:
        assert monitor.alert_manager.active_alerts() == []
        monitor.record_trading_metrics(portfolio_value=141500, daily_pnl=-6000, position_count=10, trade_count=51)
        (alert,) = monitor.alert_manager.active_alerts()
        assert (alert.rule, alert.severity, alert.value) == ("high_loss", AlertSeverity.CRITICAL, -6000)
        assert monitor.registry.get_sample_value("gpt_trader_daily_pnl_usd") == -6000
        assert monitor.registry.get_sample_value("gpt_trader_alerts_active", {"severity": "critical"}) == 1
        assert monitor.health().score <= 50  # a critical alert caps health
    finally:
        monitor.stop()
    assert not any(t.name == "monitoring-sampler" and t.is_alive() for t in threading.enumerate())


def test_monitor_bare_construction_binds_no_port_and_uses_memory_history() -> None:
    monitor = SystemMonitor()
    try:
        assert monitor._server is None
        assert monitor.history is not None
        assert monitor.history.engine.url.database == ":memory:"
    finally:
        monitor.stop()


def test_monitor_trading_metrics_set_gauges_and_latest(monitor: SystemMonitor) -> None:
    monitor.record_trading_metrics(portfolio_value=150000, daily_pnl=2500, position_count=10, trade_count=50)
    r = monitor.registry
    assert r.get_sample_value("gpt_trader_portfolio_value_usd") == 150000
    assert r.get_sample_value("gpt_trader_positions") == 10
    assert r.get_sample_value("gpt_trader_trades_today") == 50
    assert monitor.latest("trading.daily_pnl") == 2500
    assert monitor.snapshot()["trading.portfolio_value"] == 150000


def test_monitor_prediction_records_histogram_counter_and_latency_sample(monitor: SystemMonitor) -> None:
    for ms in (2.0, 4.0, 30.0):
        monitor.record_prediction("transformer", latency_ms=ms)
    r = monitor.registry
    assert r.get_sample_value("gpt_trader_model_predictions_total", {"model": "transformer"}) == 3
    assert r.get_sample_value("gpt_trader_model_latency_seconds_count", {"model": "transformer"}) == 3
    assert r.get_sample_value("gpt_trader_model_latency_seconds_sum", {"model": "transformer"}) == pytest.approx(0.036)
    assert r.get_sample_value("gpt_trader_model_latency_seconds_bucket", {"model": "transformer", "le": "0.01"}) == 2
    assert monitor.latest("model.latency_ms", {"model": "transformer"}) == 30.0


def test_monitor_outcomes_give_rolling_accuracy(clock: SimClock) -> None:
    monitor = SystemMonitor(MonitoringConfig(accuracy_window=4), registry=CollectorRegistry(), clock=clock)
    try:
        for correct in (True, True, False, True):
            monitor.record_outcome("dqn", correct)
        assert monitor.latest("model.accuracy", {"model": "dqn"}) == 0.75
        monitor.record_outcome("dqn", False)  # the oldest (True) leaves the window
        assert monitor.latest("model.accuracy", {"model": "dqn"}) == 0.5
        assert monitor.registry.get_sample_value("gpt_trader_model_accuracy_ratio", {"model": "dqn"}) == 0.5
        assert (
            monitor.registry.get_sample_value("gpt_trader_model_outcomes_total", {"model": "dqn", "result": "wrong"})
            == 2
        )
    finally:
        monitor.stop()


def test_monitor_pipeline_report_derives_rate_error_ratio_and_age(monitor: SystemMonitor, clock: SimClock) -> None:
    monitor.record_pipeline_metrics(ticks_ingested=100, source="alpaca")
    clock.advance(timedelta(seconds=2))
    monitor.record_pipeline_metrics(ticks_ingested=1000, errors=10, lag_secs=0.25, dead_letters=3, source="alpaca")
    labels = {"source": "alpaca"}
    assert monitor.latest("pipeline.ingest_rate", labels) == 500.0
    assert monitor.latest("pipeline.error_rate", labels) == pytest.approx(10 / 1010)
    assert monitor.latest("pipeline.lag_secs", labels) == 0.25
    r = monitor.registry
    assert r.get_sample_value("gpt_trader_ticks_ingested_total", labels) == 1100
    assert r.get_sample_value("gpt_trader_dead_letters_total", labels) == 3
    clock.advance(timedelta(seconds=30))
    values = monitor.sample_system()
    assert values["pipeline.data_age_secs"] == 30.0
    assert r.get_sample_value("gpt_trader_pipeline_data_age_seconds") == 30.0


def test_monitor_sample_system_reads_psutil_and_evaluates_rules(monitor: SystemMonitor) -> None:
    monitor.alert_manager.add_rule(
        AlertRule(name="cpu_seen", metric_name="system.cpu_percent", condition="ge", threshold=0)
    )
    values = monitor.sample_system()
    assert 0 <= values["system.memory_percent"] <= 100
    assert values["system.memory_used_bytes"] > 0
    assert 0 <= values["system.disk_percent"] <= 100
    assert 0 <= values["health.score"] <= 100
    assert (
        monitor.registry.get_sample_value("gpt_trader_system_memory_used_bytes") == values["system.memory_used_bytes"]
    )
    assert (monitor.registry.get_sample_value("gpt_trader_process_resident_memory_bytes") or 0) > 0
    assert [a.rule for a in monitor.alert_manager.active_alerts()] == ["cpu_seen"]
    monitor.sample_system()
    assert "system.network_sent_bytes_per_sec" in monitor.snapshot()  # a rate needs two samples


def test_monitor_custom_metric_exported_with_mechanical_name(monitor: SystemMonitor) -> None:
    monitor.record("risk.var_95", 1234.5, {"book": "main"})
    assert prometheus_name("risk.var_95") == "gpt_trader_risk_var_95"
    assert monitor.registry.get_sample_value("gpt_trader_risk_var_95", {"book": "main"}) == 1234.5
    with pytest.raises(ValueError, match="labels"):
        monitor.record("risk.var_95", 1.0, {"desk": "x"})
    with pytest.raises(ValueError, match="typed method"):
        monitor.record("trading.daily_pnl", 1.0)


def test_catalogue_dotted_names_map_to_registered_metrics(monitor: SystemMonitor) -> None:
    exported = monitor.metrics.exported_names()
    assert prometheus_name("trading.daily_pnl") == "gpt_trader_daily_pnl_usd"
    for spec in CATALOGUE.values():
        series = f"{spec.prometheus}_bucket" if spec.kind == "histogram" else spec.prometheus
        assert series in exported, spec


def test_metrics_endpoint_scraped_with_httpx_shows_metrics(clock: SimClock) -> None:
    config = MonitoringConfig(exporter=ExporterConfig(enabled=True, port=0), sampler=SamplerConfig(interval_secs=60))
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
    try:
        monitor.start()
        port = monitor.serve_metrics()  # already serving: returns the bound port
        monitor.record_trading_metrics(portfolio_value=150000, daily_pnl=-1250.5, position_count=3, trade_count=7)
        monitor.record_prediction("transformer", latency_ms=4.2)
        monitor.record_pipeline_metrics(ticks_ingested=10, source="binance")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        monitor.stop()
    assert "gpt_trader_portfolio_value_usd 150000.0" in text
    assert "gpt_trader_daily_pnl_usd -1250.5" in text
    assert 'gpt_trader_model_latency_seconds_bucket{le="0.005",model="transformer"} 1.0' in text
    assert 'gpt_trader_ticks_ingested_total{source="binance"} 10.0' in text
    assert "gpt_trader_system_cpu_percent" in text  # the sampler ran once at start
    assert "# TYPE gpt_trader_model_latency_seconds histogram" in text


def test_monitor_stop_is_idempotent_and_restart_refused(monitor: SystemMonitor) -> None:
    monitor.start()
    monitor.start()
    monitor.stop()
    monitor.stop()
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        monitor.start()
    monitor.record_trading_metrics(daily_pnl=1.0)  # recording after stop still works in memory


def test_monitor_configured_rules_are_loaded(clock: SimClock) -> None:
    config = MonitoringConfig.model_validate(
        {
            "rules": [
                {
                    "name": "lag",
                    "metric_name": "pipeline.lag_secs",
                    "condition": "gt",
                    "threshold": 5,
                    "severity": "error",
                }
            ]
        }
    )
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
    try:
        monitor.record_pipeline_metrics(ticks_ingested=1, lag_secs=9)
        assert [a.severity for a in monitor.alert_manager.active_alerts()] == [AlertSeverity.ERROR]
    finally:
        monitor.stop()


def test_monitor_seed_named_cooldown_paces_refiring(clock: SimClock) -> None:
    # `alert_cooldown` is the seed's name for `alert_cooldown_secs`; the value must reach the alert manager.
    config = MonitoringConfig.model_validate(
        {
            "alert_cooldown": 60,
            "rules": [
                {"name": "lag", "metric_name": "pipeline.lag_secs", "condition": "gt", "threshold": 5},
            ],
        }
    )
    assert config.alert_cooldown_secs == 60
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
    try:
        monitor.record_pipeline_metrics(ticks_ingested=1, lag_secs=9)
        [first] = monitor.alert_manager.active_alerts()
        monitor.alert_manager.resolve(first.id)
        clock.advance(timedelta(seconds=59))
        monitor.record_pipeline_metrics(ticks_ingested=1, lag_secs=9)
        assert monitor.alert_manager.active_alerts() == []
        assert monitor.alert_manager.suppressed_counts() == {"lag": 1}
        clock.advance(timedelta(seconds=2))
        monitor.record_pipeline_metrics(ticks_ingested=1, lag_secs=9)
        assert [a.rule for a in monitor.alert_manager.active_alerts()] == ["lag"]
    finally:
        monitor.stop()


def test_monitoring_import_is_light() -> None:
    code = (
        "import sys, gpt_trader.monitoring;"
        "heavy = [m for m in ('prometheus_client', 'sqlalchemy', 'httpx', 'psutil', 'tenacity') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
