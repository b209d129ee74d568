"""Real components for the dashboard tests: a monitor on a simulated clock, a traded portfolio, a fed auto-scaler."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertRule, AlertSeverity
from gpt_trader.monitoring.config import MonitoringConfig
from gpt_trader.monitoring.dashboard.source import LiveSource
from gpt_trader.monitoring.system import SystemMonitor
from gpt_trader.scaling.autoscaler import AutoScaler
from gpt_trader.trading.execution import PaperBroker
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import Order, Side
from tests.conftest import make_bars

T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def clock() -> SimClock:
    """Time that moves only when a test says so."""
    return SimClock(T0)


@pytest.fixture
def monitor(clock: SimClock) -> Iterator[SystemMonitor]:
    """A monitor with a loss rule and a drawdown rule, on its own registry, stopped afterwards."""
    rules = [
        AlertRule(
            name="high_loss",
            metric_name="trading.daily_pnl",
            condition="lt",
            threshold=-5000,
            severity=AlertSeverity.CRITICAL,
        ),
        AlertRule(name="drawdown", metric_name="trading.drawdown_pct", condition="gt", threshold=5.0),
    ]
    mon = SystemMonitor(MonitoringConfig(rules=rules), registry=CollectorRegistry(), clock=clock, store_history=False)
    yield mon
    mon.stop()


def _trade(portfolio: Portfolio, broker: PaperBroker, symbol: str, side: Side, qty: int, price: float, ts: datetime):
    """Submit a market order to the paper broker, fill it at `price` and book the fill in `portfolio`."""
    broker.submit(Order(f"t-{symbol}-{ts.isoformat()}-{side}", symbol, side, Decimal(qty), ts))
    for fill in broker.on_price(symbol, price, ts):
        portfolio.apply_fill(fill)


@pytest.fixture
def portfolio() -> Portfolio:
    """A $100k book that bought 100 SPX and 50 IXIC through the paper broker, marked over three days."""
    book = Portfolio(Decimal(100_000))
    broker = PaperBroker(initial_cash=Decimal(100_000))
    _trade(book, broker, "SPX", Side.BUY, 100, 400.0, DAY0)
    _trade(book, broker, "IXIC", Side.BUY, 50, 200.0, DAY0)
    for day, (spx, ixic) in enumerate([(400.0, 200.0), (410.0, 195.0), (420.0, 190.0)]):
        ts = DAY0 + timedelta(days=day)
        book.mark("SPX", Decimal(str(spx)))
        book.mark("IXIC", Decimal(str(ixic)))
        book.record_equity(ts)
    return book


@pytest.fixture
def scaler() -> AutoScaler:
    """An auto-scaler (recording actuator, not started) fed 80 daily bars."""
    scaler = AutoScaler()
    for row in make_bars(80).iter_rows(named=True):
        scaler.update_market_data(row["close"], row["volume"], ts=row["ts"])
    return scaler


@pytest.fixture
def source(monitor: SystemMonitor, portfolio: Portfolio, scaler: AutoScaler, tmp_path) -> LiveSource:
    """A LiveSource over the real components, with an (empty) reports directory."""
    return LiveSource(monitor, portfolio, scaler, reports_dir=tmp_path / "reports")


@pytest.fixture
def loss_alert(monitor: SystemMonitor) -> str:
    """Record a big loss so the critical `high_loss` rule fires; the alert's id."""
    monitor.record_trading_metrics(portfolio_value=94_000, daily_pnl=-6_000)
    (alert,) = monitor.alert_manager.active_alerts()
    return alert.id
