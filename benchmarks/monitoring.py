"""Monitoring throughput: samples/s through `SystemMonitor.record_*` with 20 alert rules, against raw prometheus_client.

Each scenario records the same stream of samples: trading snapshots (4 samples per call), model predictions
(1 sample) and pipeline reports (4 samples), in the ratio 1:4:1, timestamps from a simulated clock advancing 1 ms
per call. The monitor evaluates 20 rules on them (instant, `for_secs` and windowed mean/min/max rules); the baseline
does only the prometheus_client updates the monitor makes for the same calls, so the ratio is the price of alerting,
history buffering and derived metrics. Scenarios: rules only (no history), rules + history (in-memory SQLite with
its background writer flushing batches), and "flapping" (daily P&L crossing a threshold every call, cooldown 0:
an alert fires or resolves on every trading snapshot). Best of `--repeat`. Target: >= 10,000 samples/s (the seed
claims 1K/s). Nothing is asserted about speed.

    python benchmarks/monitoring.py [--calls 60000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertRule, AlertSeverity
from gpt_trader.monitoring.config import HistoryConfig, MonitoringConfig
from gpt_trader.monitoring.metrics import MonitoringMetrics
from gpt_trader.monitoring.system import SystemMonitor

TARGET = 10_000.0
SAMPLES_PER_CYCLE = 4 + 4 * 1 + 4  # trading + 4 predictions + pipeline
CALLS_PER_CYCLE = 6

C = AlertSeverity.CRITICAL
E = AlertSeverity.ERROR
W = AlertSeverity.WARNING


def rules() -> list[AlertRule]:
    """20 rules over the recorded metrics, mixing instant, sustained and windowed forms."""
    r = AlertRule
    return [
        r(name="loss_critical", metric_name="trading.daily_pnl", condition="lt", threshold=-5000, severity=C),
        r(
            name="loss_sustained",
            metric_name="trading.daily_pnl",
            condition="lt",
            threshold=-2000,
            for_secs=60,
            severity=E,
        ),
        r(name="loss_mean", metric_name="trading.daily_pnl", condition="lt", threshold=-1000, window_secs=300),
        r(name="portfolio_low", metric_name="trading.portfolio_value", condition="lt", threshold=100_000, severity=E),
        r(
            name="portfolio_min",
            metric_name="trading.portfolio_value",
            condition="lt",
            threshold=90_000,
            window_secs=3600,
            aggregation="min",
        ),
        r(name="positions_high", metric_name="trading.position_count", condition="gt", threshold=50),
        r(name="trades_high", metric_name="trading.trade_count", condition="gt", threshold=10_000),
        r(
            name="latency_mean",
            metric_name="model.latency_ms",
            condition="gt",
            threshold=10,
            window_secs=60,
            severity=W,
        ),
        r(name="latency_spike", metric_name="model.latency_ms", condition="gt", threshold=50, severity=E),
        r(name="latency_sustained", metric_name="model.latency_ms", condition="gt", threshold=20, for_secs=30),
        r(
            name="latency_max",
            metric_name="model.latency_ms",
            condition="gt",
            threshold=100,
            window_secs=60,
            aggregation="max",
        ),
        r(name="accuracy_low", metric_name="model.accuracy", condition="lt", threshold=0.5, window_secs=600),
        r(name="errors_high", metric_name="pipeline.error_rate", condition="gt", threshold=0.05, severity=E),
        r(name="lag_high", metric_name="pipeline.lag_secs", condition="gt", threshold=5),
        r(name="ingest_low", metric_name="pipeline.ingest_rate", condition="lt", threshold=10, for_secs=60),
        r(name="dead_letters", metric_name="pipeline.dead_letters", condition="gt", threshold=0),
        r(name="cpu_high", metric_name="system.cpu_percent", condition="gt", threshold=90),
        r(name="memory_high", metric_name="system.memory_percent", condition="gt", threshold=90),
        r(name="disk_high", metric_name="system.disk_percent", condition="gt", threshold=90),
        r(name="health_low", metric_name="health.score", condition="lt", threshold=50, severity=C),
    ]


def run_monitor(calls: int, *, history: bool, flapping: bool) -> tuple[float, int]:
    """Seconds and samples for `calls` record_* calls on a monitor with the 20 rules."""
    clock = SimClock(datetime(2025, 1, 6, tzinfo=UTC))
    config = MonitoringConfig(
        alert_cooldown_secs=0 if flapping else 300, rules=rules(), history=HistoryConfig(flush_interval_secs=0.5)
    )
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock, store_history=history)
    monitor.start()
    step = timedelta(milliseconds=1)
    cycles = calls // CALLS_PER_CYCLE
    models = ("transformer", "dqn", "ppo", "transformer")
    started = time.perf_counter()
    for i in range(cycles):
        pnl = -6000.0 if flapping and i % 2 else 2500.0
        monitor.record_trading_metrics(
            portfolio_value=150_000.0 + i % 100, daily_pnl=pnl, position_count=10, trade_count=i
        )
        for model in models:
            monitor.record_prediction(model, latency_ms=3.0 + (i % 7))
        monitor.record_pipeline_metrics(ticks_ingested=100, errors=i % 3, lag_secs=0.05, source="alpaca")
        clock.advance(step)
    monitor.stop()  # inside the timing: the final history flush is part of the cost
    elapsed = time.perf_counter() - started
    fired = len(monitor.alert_manager.history())
    dropped = monitor.history.dropped if monitor.history is not None else 0
    if flapping or dropped:
        print(f"    ({fired} alerts fired, {dropped} history samples dropped)")
    return elapsed, cycles * SAMPLES_PER_CYCLE


def run_baseline(calls: int) -> tuple[float, int]:
    """The prometheus_client updates the monitor makes for the same calls, and nothing else."""
    m = MonitoringMetrics(CollectorRegistry())
    cycles = calls // CALLS_PER_CYCLE
    models = ("transformer", "dqn", "ppo", "transformer")
    started = time.perf_counter()
    for i in range(cycles):
        m.portfolio_value.set(150_000.0 + i % 100)
        m.daily_pnl.set(2500.0)
        m.positions.set(10)
        m.trades_today.set(i)
        for model in models:
            m.model_latency.labels(model).observe((3.0 + (i % 7)) / 1000.0)
            m.predictions.labels(model).inc()
        m.ticks.labels("alpaca").inc(100)
        if i % 3:
            m.pipeline_errors.labels("alpaca").inc(i % 3)
        m.ingest_rate.labels("alpaca").set(100_000.0)
        m.error_ratio.labels("alpaca").set((i % 3) / (100 + i % 3))
        m.lag.labels("alpaca").set(0.05)
    return time.perf_counter() - started, cycles * SAMPLES_PER_CYCLE


def best(fn: Callable[[], tuple[float, int]], repeat: int) -> float:
    """Best samples/s over `repeat` runs."""
    rates = []
    for _ in range(repeat):
        secs, samples = fn()
        rates.append(samples / secs)
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=60_000, help="record_* calls per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # Flapping fires ~5,000 alerts a run; printing each to the terminal would measure the terminal.
    logging.getLogger("gpt_trader.monitoring").setLevel(logging.ERROR)

    print(f"monitoring benchmark: {args.calls:,} record_* calls per run, 20 alert rules, best of {args.repeat}")
    baseline = best(lambda: run_baseline(args.calls), args.repeat)
    scenarios = {
        "rules, no history": lambda: run_monitor(args.calls, history=False, flapping=False),
        "rules + SQLite history": lambda: run_monitor(args.calls, history=True, flapping=False),
        "rules + history, flapping": lambda: run_monitor(args.calls, history=True, flapping=True),
    }
    print(f"  {'raw prometheus_client (baseline)':34s} {baseline:>12,.0f} samples/s")
    for name, fn in scenarios.items():
        rate = best(fn, args.repeat)
        print(
            f"  {name:34s} {rate:>12,.0f} samples/s   {rate / baseline:5.2f}x baseline   "
            f"{rate / TARGET:5.1f}x the 10K/s target   {1e6 / rate:6.1f} us/sample"
        )

    # evaluate(): the sampler's periodic re-check of every rule state.
    clock = SimClock(datetime(2025, 1, 6, tzinfo=UTC))
    monitor = SystemMonitor(
        MonitoringConfig(rules=rules()), registry=CollectorRegistry(), clock=clock, store_history=False
    )
    for i in range(1_000):
        monitor.record_trading_metrics(portfolio_value=150_000.0, daily_pnl=100.0, position_count=1, trade_count=i)
        monitor.record_prediction(f"model{i % 10}", latency_ms=4.0)
        monitor.record_pipeline_metrics(ticks_ingested=10, lag_secs=0.01, source=f"src{i % 5}")
    n = 2_000
    started = time.perf_counter()
    for _ in range(n):
        clock.advance(timedelta(milliseconds=10))
        monitor.alert_manager.evaluate()
    per = (time.perf_counter() - started) / n
    states = len(monitor.alert_manager._states)
    print(f"  evaluate(): {per * 1e6:,.1f} us per call over {states} rule/label states")
    monitor.stop()


if __name__ == "__main__":
    main()
