"""Metric history on SQLite (file and in-memory): batched writes, range queries, retention purge, writer thread."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertManager, AlertRule
from gpt_trader.monitoring.history import MetricHistory, samples_table
from gpt_trader.monitoring.system import SystemMonitor


def test_history_sqlite_file_query_by_name_range_and_labels(tmp_path: Path, clock: SimClock) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'history.db'}"
    history = MetricHistory(url, clock=clock, batch_size=7)
    t0 = clock.now()
    for i in range(50):
        history.append("trading.daily_pnl", float(i), (t0 + timedelta(minutes=i)).timestamp())
        history.append(
            "model.latency_ms", float(i), (t0 + timedelta(minutes=i)).timestamp(), {"model": "a" if i % 2 else "b"}
        )
    assert history.flush() == 100
    window = history.query("trading.daily_pnl", start=t0 + timedelta(minutes=10), end=t0 + timedelta(minutes=19))
    assert [s.value for s in window] == [float(i) for i in range(10, 20)]
    assert window[0].ts == t0 + timedelta(minutes=10)
    assert window[0].ts.tzinfo is not None
    only_a = history.query("model.latency_ms", labels={"model": "a"})
    assert len(only_a) == 25
    assert all(s.labels == {"model": "a"} for s in only_a)
    assert history.names() == ["model.latency_ms", "trading.daily_pnl"]
    history.close()
    # The file persists: a second store on the same URL reads what the first wrote.
    again = MetricHistory(url, clock=clock)
    assert len(again.query("trading.daily_pnl", limit=5)) == 5
    again.close()


def test_history_purge_deletes_only_rows_past_retention(clock: SimClock) -> None:
    history = MetricHistory(None, retention_hours=24, clock=clock)
    start = clock.now()
    for hours in range(0, 48, 6):  # samples at 0, 6, ..., 42 h
        history.append("m", float(hours), (start + timedelta(hours=hours)).timestamp())
    clock.advance(timedelta(hours=48))
    assert history.purge() == 4  # 0, 6, 12, 18 h are older than 24 h
    assert [s.value for s in history.query("m")] == [24.0, 30.0, 36.0, 42.0]


def test_history_full_buffer_drops_and_counts(clock: SimClock) -> None:
    dropped: list[int] = []
    history = MetricHistory(None, clock=clock, max_buffer=10, on_drop=dropped.append)
    results = [history.append("m", float(i), clock.now().timestamp()) for i in range(15)]
    assert results.count(False) == 5
    assert history.dropped == 5
    assert sum(dropped) == 5
    assert history.flush() == 10


def test_history_writer_thread_flushes_in_background(clock: SimClock) -> None:
    history = MetricHistory(None, clock=clock, batch_size=100, flush_interval_secs=0.05)
    history.start()
    try:
        for i in range(250):
            history.append("m", float(i), clock.now().timestamp())
        # Wait on the table, not a sleep: the writer owns flushing here.
        deadline_rows = 0
        for _ in range(100):
            with history._db_lock, history.engine.connect() as conn:
                deadline_rows = conn.execute(sa.select(sa.func.count()).select_from(samples_table)).scalar_one()
            if deadline_rows == 250:
                break
            history._stop.wait(0.05)
        assert deadline_rows == 250
    finally:
        history.close()


def test_history_failed_flush_requeues_rows(clock: SimClock) -> None:
    history = MetricHistory(None, clock=clock)
    history.append("m", 1.0, clock.now().timestamp())
    samples_table.drop(history.engine)
    try:
        history.flush()
    except sa.exc.OperationalError:
        pass
    else:
        raise AssertionError("flush into a missing table should fail")
    samples_table.create(history.engine)
    assert history.flush() == 1  # nothing was lost


def test_history_alert_events_stored(clock: SimClock) -> None:
    history = MetricHistory(None, clock=clock)
    manager = AlertManager(clock=clock)
    manager.subscribe(history.append_alert_event)
    manager.add_rule(AlertRule(name="loss", metric_name="trading.daily_pnl", condition="lt", threshold=0))
    manager.observe("trading.daily_pnl", -10)
    clock.advance(timedelta(seconds=30))
    manager.observe("trading.daily_pnl", 10)
    events = history.alert_events(rule="loss")
    assert [e["kind"] for e in events] == ["firing", "resolved"]
    assert events[1]["ts"] == clock.now()


def test_monitor_records_samples_into_history(monitor: SystemMonitor) -> None:
    monitor.record_trading_metrics(portfolio_value=100.0, daily_pnl=-3.0, position_count=1, trade_count=2)
    monitor.record_prediction("tf", 3.5)
    assert monitor.history is not None
    assert [s.value for s in monitor.history.query("trading.daily_pnl")] == [-3.0]
    assert monitor.history.query("model.latency_ms")[0].labels == {"model": "tf"}
