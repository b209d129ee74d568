"""Metric history on every database backend available (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.config import HistoryConfig, MonitoringConfig
from gpt_trader.monitoring.history import MetricHistory
from gpt_trader.monitoring.system import SystemMonitor
from tests.integration.conftest import DATABASE_BACKENDS

pytestmark = pytest.mark.integration


@pytest.fixture(params=DATABASE_BACKENDS)
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
    else:
        name = request.getfixturevalue("postgres_database")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


def test_history_backend_batched_insert_query_and_purge(history_url: str) -> None:
    clock = SimClock(datetime(2025, 1, 6, tzinfo=UTC))
    history = MetricHistory(history_url, retention_hours=1, clock=clock, batch_size=250)
    try:
        t0 = clock.now()
        for i in range(1_000):  # one sample a second for 1000 s
            history.append("trading.daily_pnl", float(i), (t0 + timedelta(seconds=i)).timestamp(), {"book": "main"})
        assert history.flush() == 1_000
        rows = history.query("trading.daily_pnl", start=t0 + timedelta(seconds=100), end=t0 + timedelta(seconds=199))
        assert [s.value for s in rows] == [float(i) for i in range(100, 200)]
        assert rows[0].labels == {"book": "main"}
        assert rows[0].ts == t0 + timedelta(seconds=100)
        clock.advance(timedelta(seconds=3_600 + 500))  # retention cut-off lands at sample 500
        assert history.purge() == 500
        remaining = history.query("trading.daily_pnl")
        assert (len(remaining), remaining[0].value) == (500, 500.0)
    finally:
        history.close()


def test_monitor_backend_configured_url_persists_samples_and_alerts(history_url: str) -> None:
    clock = SimClock(datetime(2025, 1, 6, tzinfo=UTC))
    config = MonitoringConfig.model_validate(
        {
            "history": HistoryConfig(url=history_url, flush_interval_secs=0.05).model_dump(),
            "rules": [{"name": "loss", "metric_name": "trading.daily_pnl", "condition": "lt", "threshold": 0}],
        }
    )
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
    monitor.start()
    monitor.record_trading_metrics(portfolio_value=1e5, daily_pnl=-50, position_count=2, trade_count=4)
    monitor.stop()  # flushes
    reader = MetricHistory(history_url, clock=clock)
    try:
        assert [s.value for s in reader.query("trading.portfolio_value")] == [1e5]
        assert [e["rule"] for e in reader.alert_events()] == ["loss"]
    finally:
        reader.close()
        assert monitor.history is not None
        monitor.history.close()
