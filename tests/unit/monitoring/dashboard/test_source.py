"""The dashboard snapshot built from real components, and its pure helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertState
from gpt_trader.monitoring.dashboard.source import (
    DRIFT_URL_PREFIX,
    DashboardSource,
    LiveSource,
    build_snapshot,
    downsample,
    histogram_quantile,
    json_safe,
    pnl_section,
    sample_quantile,
)
from gpt_trader.monitoring.system import SystemMonitor
from gpt_trader.scaling.autoscaler import AutoScaler
from gpt_trader.trading.portfolio import Portfolio

NOW = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)


def test_snapshot_real_components_has_every_section(source: LiveSource) -> None:
    snap = source.snapshot()
    assert set(snap) == {
        "generated_at",
        "health",
        "pnl",
        "equity_curve",
        "positions",
        "alerts",
        "pipeline",
        "models",
        "scaling",
        "drift",
    }
    json.dumps(snap, allow_nan=False)  # strictly JSON: no NaN, Decimal or datetime left
    assert isinstance(source, DashboardSource)
    assert snap["drift"] == []
    assert snap["health"]["status"] in {"healthy", "degraded", "unhealthy"}


def test_snapshot_portfolio_with_fills_reports_pnl_identities(source: LiveSource, portfolio: Portfolio) -> None:
    snap = source.snapshot()
    pnl = snap["pnl"]
    assert pnl["equity"] == pytest.approx(float(portfolio.equity()))
    # equity - initial = realized + unrealized - commissions (the portfolio's identity, carried to the page)
    assert pnl["equity"] - pnl["initial"] == pytest.approx(pnl["realized"] + pnl["unrealized"] - pnl["commissions"])
    assert pnl["commissions"] > 0  # the paper broker charged the cost model's commission
    # SPX 100 @ ~400 -> 420, IXIC 50 @ ~200 -> 190
    rows = {p["symbol"]: p for p in snap["positions"]}
    assert rows["SPX"]["quantity"] == 100
    assert rows["SPX"]["mark"] == 420
    assert rows["SPX"]["unrealized_pnl"] == pytest.approx(100 * (420 - rows["SPX"]["avg_price"]))
    assert rows["IXIC"]["unrealized_pnl"] < 0
    assert [p["symbol"] for p in snap["positions"]] == ["SPX", "IXIC"]  # largest exposure first
    curve = snap["equity_curve"]
    assert len(curve) == 3
    assert curve[0][0] == datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000


def test_pnl_daily_without_monitor_metric_uses_previous_day(portfolio: Portfolio) -> None:
    curve = portfolio.equity_curve
    pnl = pnl_section(portfolio, curve, None)
    assert pnl["daily"] == pytest.approx(float(curve[-1].equity - curve[-2].equity))
    # the monitor's own daily P&L wins when the trading loop records one
    assert pnl_section(portfolio, curve, -123.0)["daily"] == -123.0


def test_snapshot_alerts_fired_lists_active_and_counts(source: LiveSource, loss_alert: str) -> None:
    alerts = source.snapshot()["alerts"]
    (active,) = alerts["active"]
    assert (active["id"], active["severity"], active["state"], active["rule"]) == (
        loss_alert,
        "critical",
        "firing",
        "high_loss",
    )
    assert alerts["counts"]["critical"] == 1
    assert alerts["recent"][0]["id"] == loss_alert


def test_live_source_acknowledge_then_resolve_changes_alert_manager(
    source: LiveSource, monitor: SystemMonitor, clock: SimClock, loss_alert: str
) -> None:
    clock.advance(timedelta(seconds=5))
    acked = source.acknowledge(loss_alert, by="alice")
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "alice")
    (alert,) = monitor.alert_manager.active_alerts()
    assert alert.state is AlertState.ACKNOWLEDGED
    resolved = source.resolve(loss_alert, by="bob")
    assert (resolved["state"], resolved["resolved_by"]) == ("resolved", "bob")
    assert monitor.alert_manager.active_alerts() == []
    assert source.snapshot()["alerts"]["recent"][0]["state"] == "resolved"


def test_live_source_unknown_alert_raises_key_error(source: LiveSource) -> None:
    with pytest.raises(KeyError):
        source.acknowledge("nope", by="alice")


def test_snapshot_pipeline_reports_per_source(source: LiveSource, monitor: SystemMonitor, clock: SimClock) -> None:
    monitor.record_pipeline_metrics(ticks_ingested=10, source="binance")
    clock.advance(timedelta(seconds=2))
    monitor.record_pipeline_metrics(ticks_ingested=40, errors=2, dead_letters=1, lag_secs=0.25, source="binance")
    monitor.record_pipeline_metrics(ticks_ingested=5, source="alpaca")
    rows = {r["source"]: r for r in source.snapshot()["pipeline"]}
    b = rows["binance"]
    assert (b["ticks_total"], b["errors_total"], b["dead_letters_total"]) == (50, 2, 1)
    assert b["ingest_rate"] == pytest.approx(20.0)  # 40 ticks over 2 s
    assert b["error_ratio"] == pytest.approx(2 / 42)
    assert b["lag_secs"] == 0.25
    assert rows["alpaca"]["ingest_rate"] is None  # one report: no rate yet


def test_snapshot_models_reports_exact_latency_quantiles(source: LiveSource, monitor: SystemMonitor) -> None:
    for ms in range(1, 101):
        monitor.record_prediction("transformer", latency_ms=float(ms))
    monitor.record_outcome("transformer", correct=True)
    (row,) = source.snapshot()["models"]
    assert (row["model"], row["predictions"]) == ("transformer", 100)
    assert (row["latency_p50_ms"], row["latency_p95_ms"]) == (50.0, 95.0)
    assert row["latency_mean_ms"] == pytest.approx(50.5)
    assert (row["last_latency_ms"], row["accuracy"]) == (100.0, 1.0)


def test_snapshot_scaling_lists_decisions_newest_first(source: LiveSource, scaler: AutoScaler) -> None:
    scaling = source.snapshot()["scaling"]
    status = scaler.get_status()
    assert scaling["market_condition"] == status["market_condition"]
    assert scaling["resources"]["workers"] == status["resources"]["workers"]
    assert scaling["cost_per_hour"] == status["total_cost_per_hour"]
    assert scaling["decisions"][0]["reason"] == status["last_decisions"][-1]["reason"]
    assert all(d["reason"] for d in scaling["decisions"])


def test_snapshot_without_portfolio_or_scaler_leaves_sections_empty(monitor: SystemMonitor) -> None:
    snap = build_snapshot(monitor, None, None, now=NOW)
    assert (snap["pnl"], snap["equity_curve"], snap["positions"], snap["scaling"]) == (None, [], [], None)


def test_live_source_drift_reports_listed_newest_first_with_verdicts(source: LiveSource, tmp_path) -> None:
    drift = tmp_path / "reports" / "drift"
    spx = drift / "bundled" / "SPX_1d"
    spx.mkdir(parents=True)
    (spx / "latest.html").write_text("<html>spx</html>")
    (spx / "latest.json").write_text(json.dumps({"drift_detected": True, "share_drifted": 0.5}))
    (spx / "20250101T000000Z.html").write_text("<html>older</html>")  # archived copies are not listed
    (drift / "latest.html").write_text("<html>bare</html>")  # no summary beside it
    os.utime(drift / "latest.html", (1_000_000, 1_000_000))  # older than the SPX report

    reports = source.snapshot()["drift"]
    assert [r["dataset"] for r in reports] == ["bundled/SPX_1d", ""]
    assert reports[0]["url"] == DRIFT_URL_PREFIX + "bundled/SPX_1d/latest.html"
    assert (reports[0]["drift_detected"], reports[0]["share_drifted"]) == (True, 0.5)
    assert (reports[1]["url"], reports[1]["drift_detected"]) == (DRIFT_URL_PREFIX + "latest.html", None)
    assert source.drift_report("bundled/SPX_1d") == (spx / "latest.html").resolve()
    assert source.drift_report("") == (drift / "latest.html").resolve()


@pytest.mark.parametrize("dataset", ["..", "bundled/../..", "/etc", "bundled//SPX_1d", "missing"])
def test_live_source_drift_report_outside_or_missing_returns_none(source: LiveSource, tmp_path, dataset) -> None:
    (tmp_path / "reports" / "drift").mkdir(parents=True)
    (tmp_path / "reports" / "latest.html").write_text("<html>not a drift report</html>")
    assert source.drift_report(dataset) is None


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.005, 10.0), (0.01, 30.0), (0.025, 40.0), (math.inf, 40.0)]
    # rank 20 of 40 falls halfway through (0.005, 0.01]: 10 below, 20 inside
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0075)
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.99, [(0.01, 1.0), (math.inf, 10.0)]) == 0.01  # +Inf bucket: largest finite bound


def test_sample_quantile_nearest_rank() -> None:
    assert sample_quantile(0.95, [float(x) for x in range(1, 21)]) == 19.0
    assert sample_quantile(0.5, []) is None


def test_downsample_long_series_keeps_extremes_and_ends() -> None:
    points = [(float(i), math.sin(i / 50) * 100 + (500 if i == 777 else 0)) for i in range(5000)]
    out = downsample(points, 200)
    assert len(out) <= 200
    assert out[0] == [0.0, points[0][1]]
    assert out[-1] == [4999.0, points[-1][1]]
    assert max(v for _, v in out) == max(v for _, v in points)  # the spike survives
    assert [t for t, _ in out] == sorted(t for t, _ in out)
    assert downsample(points[:10], 200) == [[t, v] for t, v in points[:10]]


def test_json_safe_converts_nan_decimal_and_datetime() -> None:
    out = json_safe({"a": math.nan, "b": Decimal("1.5"), "c": [NOW, (1, math.inf)], 3: None})
    assert out == {"a": None, "b": 1.5, "c": [NOW.isoformat(), [1, None]], "3": None}


def test_dashboard_package_import_stays_light() -> None:
    code = (
        "import sys, gpt_trader.monitoring, gpt_trader.monitoring.dashboard; "
        "print([m for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
