"""A self-contained session for `gpt-trader dashboard`: real components fed by replaying bundled real bars.

Until the live trading flow exists, this is what the page shows: a `SystemMonitor` with alert rules, a `Portfolio`
traded through a `PaperBroker` (the one `CostModel`) by a deterministic trend rule on S&P 500 and NASDAQ daily bars,
and an `AutoScaler` classifying the same bars. Pipeline and model metrics are measured from the replay itself
(bars ingested per second, the wall time of each signal and classification). The live process hosts the same app
with a `LiveSource` over its own components instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt_trader.core.clock import utc_midnight

if TYPE_CHECKING:
    from gpt_trader.monitoring.dashboard.source import LiveSource
    from gpt_trader.monitoring.system import SystemMonitor
    from gpt_trader.scaling.autoscaler import AutoScaler
    from gpt_trader.trading.costs import CostModel
    from gpt_trader.trading.execution import PaperBroker
    from gpt_trader.trading.portfolio import Portfolio

STRATEGY = "demo-trend"
SIGNAL_MODEL = "trend-sma50"
CONDITION_MODEL = "market-condition"
# Long `WEIGHT` of equity per symbol while its close is above its `SMA_BARS`-bar average, flat otherwise.
SMA_BARS = 50
WEIGHT = 0.45


def demo_rules() -> list[Any]:
    """Alert rules that the replay trips for real: drawdowns, losing days and volatile markets."""
    from gpt_trader.monitoring.alerts import AlertRule, AlertSeverity

    return [
        AlertRule(
            name="drawdown",
            metric_name="trading.drawdown_pct",
            condition="gt",
            threshold=5.0,
            severity=AlertSeverity.WARNING,
            cooldown_secs=5,
        ),
        AlertRule(
            name="deep_drawdown",
            metric_name="trading.drawdown_pct",
            condition="gt",
            threshold=12.0,
            severity=AlertSeverity.CRITICAL,
            cooldown_secs=5,
        ),
        AlertRule(
            name="daily_loss",
            metric_name="trading.daily_pnl",
            condition="lt",
            threshold=-1500,
            severity=AlertSeverity.ERROR,
            cooldown_secs=5,
        ),
        AlertRule(
            name="volatile_market",
            metric_name="scaling.condition_level",
            condition="ge",
            threshold=3,
            severity=AlertSeverity.WARNING,
            cooldown_secs=5,
        ),
    ]


class DemoSession:
    """Replays aligned daily bars of `symbols` through real components, one bar per `1 / bars_per_sec` seconds.

    `step()` advances one bar synchronously (tests use it); `start()` replays on a background thread. The
    session's `lock` is held while a bar is applied, and handed to the `LiveSource`, so the page never reads a
    half-updated portfolio.
    """

    def __init__(
        self,
        symbols: tuple[str, ...] = ("SPX", "IXIC"),
        *,
        start: date = date(2007, 1, 1),
        end: date | None = None,
        bars_per_sec: float = 4.0,
        initial_cash: Decimal = Decimal(100_000),
        reports_dir: Path | None = None,
        monitor: SystemMonitor | None = None,
        scaler: AutoScaler | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        from gpt_trader.monitoring.config import MonitoringConfig
        from gpt_trader.monitoring.system import SystemMonitor
        from gpt_trader.scaling.autoscaler import AutoScaler
        from gpt_trader.trading.costs import CostModel
        from gpt_trader.trading.execution import PaperBroker
        from gpt_trader.trading.portfolio import Portfolio

        self.symbols = symbols
        self.bars_per_sec = bars_per_sec
        self.reports_dir = reports_dir
        self.lock = threading.RLock()
        self.monitor: SystemMonitor = monitor or SystemMonitor(
            MonitoringConfig(rules=demo_rules(), alert_cooldown_secs=5),
            registry=CollectorRegistry(),
            store_history=False,
        )
        self.scaler: AutoScaler = scaler or AutoScaler()
        self.broker: PaperBroker = PaperBroker(cost_model or CostModel(), initial_cash=initial_cash)
        self.portfolio: Portfolio = Portfolio(initial_cash)
        self._rows = _aligned_rows(symbols, start, end)
        self._warmup = min(SMA_BARS, max(0, len(self._rows) - 1))
        self._closes: dict[str, deque[float]] = {s: deque(maxlen=SMA_BARS) for s in symbols}
        self._index = 0
        self._peak = float(initial_cash)
        self._previous_equity: float | None = None
        self._trades = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warm_up()

    # -- replay --------------------------------------------------------------------------------------------------

    def _warm_up(self) -> None:
        # The first bars only fill the moving averages and the classifier's windows; they are not traded or shown.
        for row in self._rows[: self._warmup]:
            for s in self.symbols:
                self._closes[s].append(row[s]["close"])
            lead = row[self.symbols[0]]
            self.scaler.update_market_data(lead["close"], lead["volume"], ts=row["ts"])
        self._index = self._warmup

    @property
    def finished(self) -> bool:
        """Whether every bar has been replayed."""
        return self._index >= len(self._rows)

    @property
    def bars_replayed(self) -> int:
        """Bars applied so far (after the warm-up)."""
        return self._index - self._warmup

    def step(self) -> bool:
        """Apply the next bar to every component; False when the data has run out."""
        from gpt_trader.core.errors import DataError
        from gpt_trader.trading.execution import make_client_order_id
        from gpt_trader.trading.types import Order, Side, to_decimal

        if self.finished:
            return False
        row = self._rows[self._index]
        self._index += 1
        ts: datetime = row["ts"]
        with self.lock:
            for symbol in self.symbols:
                bar = row[symbol]
                started = time.perf_counter()
                try:
                    _check_bar(symbol, bar)
                except DataError:
                    # A bad bar goes to the dead letters, as the live pipeline does, and is not traded.
                    self.monitor.record_pipeline_metrics(errors=1, dead_letters=1, source=f"bundled:{symbol}")
                    continue
                # Orders placed on the previous close fill at this bar's open, with the cost model's slippage.
                for fill in self.broker.on_price(symbol, bar["open"], ts, volume=bar["volume"]):
                    self.portfolio.apply_fill(fill)
                    self._trades += 1
                self.portfolio.mark(symbol, to_decimal(bar["close"]))
                closes = self._closes[symbol]
                closes.append(bar["close"])
                lag = time.perf_counter() - started

                t0 = time.perf_counter()
                target_weight = WEIGHT if bar["close"] > sum(closes) / len(closes) else 0.0
                equity = float(self.portfolio.equity())
                target_qty = math.floor(target_weight * equity / bar["close"])
                delta = target_qty - float(self.portfolio.quantity(symbol))
                self.monitor.record_prediction(SIGNAL_MODEL, latency_ms=(time.perf_counter() - t0) * 1000)
                if delta:
                    side = Side.BUY if delta > 0 else Side.SELL
                    cid = make_client_order_id(STRATEGY, symbol, ts)
                    self.broker.submit(Order(cid, symbol, side, Decimal(abs(int(delta))), ts))
                self.monitor.record_pipeline_metrics(ticks_ingested=1, lag_secs=lag, source=f"bundled:{symbol}")

            lead = row[self.symbols[0]]
            t0 = time.perf_counter()
            decision = self.scaler.update_market_data(lead["close"], lead["volume"], ts=ts)
            self.monitor.record_prediction(CONDITION_MODEL, latency_ms=(time.perf_counter() - t0) * 1000)

            point = self.portfolio.record_equity(ts)
            equity = float(point.equity)
            self._peak = max(self._peak, equity)
            daily = equity - (self._previous_equity if self._previous_equity is not None else equity)
            self._previous_equity = equity
            self.monitor.record_trading_metrics(
                portfolio_value=equity,
                daily_pnl=daily,
                position_count=len(self.portfolio.positions),
                trade_count=self._trades,
            )
            self.monitor.record("trading.drawdown_pct", 100.0 * (1 - equity / self._peak))
            self.monitor.record("scaling.condition_level", float(int(decision.condition)))
        return True

    def run(self, bars: int) -> int:
        """Apply up to `bars` bars at once; return how many were applied."""
        done = 0
        while done < bars and self.step():
            done += 1
        return done

    def start(self) -> None:
        """Replay on a background thread at `bars_per_sec` (and start the monitor's sampler and the scaler)."""
        if self._thread is not None:
            return
        self.monitor.start()
        self.scaler.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dashboard-demo", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = 1.0 / self.bars_per_sec
        while not self._stop.is_set() and self.step():
            self._stop.wait(period)

    def stop(self) -> None:
        """Stop the replay, the scaler and the monitor. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.scaler.stop()
        self.monitor.stop()

    def source(self) -> LiveSource:
        """The `LiveSource` over this session's components (what the live process builds over its own)."""
        from gpt_trader.monitoring.dashboard.source import LiveSource

        return LiveSource(self.monitor, self.portfolio, self.scaler, self.reports_dir, lock=self.lock)


def _check_bar(symbol: str, bar: dict[str, float]) -> None:
    from gpt_trader.core.errors import DataError

    o, h, lo, c, v = (bar[k] for k in ("open", "high", "low", "close", "volume"))
    if not all(math.isfinite(x) for x in (o, h, lo, c, v)) or min(o, h, lo, c) <= 0 or v < 0 or h < lo:
        raise DataError(f"bundled {symbol}: malformed bar {bar}")


def _aligned_rows(symbols: tuple[str, ...], start: date, end: date | None) -> list[dict[str, Any]]:
    """Bars of every symbol on the days they all traded: [{"ts": ..., symbol: {open, high, low, close, volume}}]."""
    import polars as pl

    from gpt_trader.core.errors import ConfigError
    from gpt_trader.core.timeframe import Timeframe
    from gpt_trader.data.sources.bundled import CATALOG, BundledSource

    if not symbols:
        raise ConfigError("the dashboard demo needs at least one symbol")
    unknown = [s for s in symbols if s not in CATALOG]
    if unknown:
        raise ConfigError(f"unknown bundled symbols {unknown}; available: {sorted(CATALOG)}")
    # Start SMA_BARS * 2 calendar days early so the warm-up ends near `start`.
    first = utc_midnight(start)
    first = first.replace(year=first.year - 1) if first.year > 1 else first
    last = utc_midnight(end) if end is not None else None
    source = BundledSource()
    frame: pl.DataFrame | None = None
    for s in symbols:
        bars = source.fetch(s, first, last, Timeframe.parse(CATALOG[s].timeframe)).select(
            "ts", pl.struct("open", "high", "low", "close", "volume").alias(s)
        )
        frame = bars if frame is None else frame.join(bars, on="ts", how="inner")
    assert frame is not None
    frame = frame.sort("ts")
    # Keep only the SMA_BARS bars before `start` as warm-up.
    before = frame.filter(pl.col("ts") < utc_midnight(start)).height
    return frame.slice(max(0, before - SMA_BARS)).to_dicts()
