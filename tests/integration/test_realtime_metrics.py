"""The pipeline's Prometheus metrics, read back from a prometheus_client registry after a short run against two local
exchanges whose primary is killed: ticks, latency, clock offset, raw delay, source health, failovers, reconnects."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from tests.support.waiting import wait_until

ENV = {"APCA_API_KEY_ID": "key", "APCA_API_SECRET_KEY": "secret", "POLYGON_API_KEY": "key"}


@pytest.mark.slow
def test_pipeline_metrics_read_from_registry_after_failover() -> None:
    registry = CollectorRegistry()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async def scenario() -> dict[str, float | None]:
        # Simulated ticks stamped with the exchange's clock (this machine's): offsets and delays are near zero.
        cfg = ExchangeConfig(feed="simulated", rate=1000, timestamps="now", quote_every=0)
        primary, backup = LocalExchange(cfg), LocalExchange(cfg)
        await primary.start()
        await backup.start()
        config = RealtimeConfig(
            timeframes=["1s"], tick_interval_ms=10.0, start_timeout_secs=5.0, backoff_base_secs=0.02,
            backoff_max_secs=0.1, backfill="none",  # backfill is not under test here
        )  # fmt: skip
        p = RealtimePipeline(
            [
                StreamConfig(DataSource.ALPACA, ["AAPL"], url=primary.url("alpaca")),
                StreamConfig(DataSource.POLYGON, ["AAPL"], url=backup.url("polygon")),
            ],
            config,
            bus=InProcessBus(),
            environ=ENV,
            registry=registry,
        )
        try:
            await p.start()
            assert await wait_until(lambda: (value("gpt_trader_realtime_source_health", source="alpaca") or 0) > 0)
            await asyncio.sleep(0.5)
            await primary.stop()  # the primary's gateway crashes
            assert await wait_until(lambda: p.active_source("AAPL") == "polygon", 5)
            assert await wait_until(lambda: value("gpt_trader_realtime_source_health", source="alpaca") == 0.0, 5)
            # A 1 s window closes (plus the lateness) on the backup's trades: a final bar is counted.
            assert await wait_until(
                lambda: (value("gpt_trader_realtime_bars_total", timeframe="1s", status="final") or 0) > 0, 10
            )
            await asyncio.sleep(0.5)
            live = {
                "health_alpaca": value("gpt_trader_realtime_source_health", source="alpaca"),
                "health_polygon": value("gpt_trader_realtime_source_health", source="polygon"),
            }
        finally:
            await p.close()
            await primary.stop()
            await backup.stop()
        return live

    live = asyncio.run(scenario())

    # health: the killed primary scores 0, the backup carries on above 0
    assert live["health_alpaca"] == 0.0
    assert 0.0 < live["health_polygon"] <= 1.0  # type: ignore[operator]
    # failover and reconnect counters
    assert value("gpt_trader_realtime_failovers_total", symbol="AAPL") >= 1  # type: ignore[operator]
    assert value("gpt_trader_realtime_reconnects_total", source="alpaca") >= 1  # type: ignore[operator]
    # ticks counted per feed: the primary's before the crash, the backup's after the failover
    for source in ("alpaca", "polygon"):
        assert value("gpt_trader_realtime_ticks_total", source=source, symbol="AAPL") > 0  # type: ignore[operator]
        # exchange time vs receive time: the latency histogram, the estimated offset and the raw delay
        count = value("gpt_trader_realtime_exchange_to_receive_seconds_count", source=source)
        assert count is not None
        assert count > 0
        assert value("gpt_trader_realtime_exchange_to_receive_seconds_sum", source=source) >= 0  # type: ignore[operator]
        offset = value("gpt_trader_realtime_clock_offset_seconds", source=source)
        raw = value("gpt_trader_realtime_raw_delay_seconds", source=source)
        assert offset is not None
        assert raw is not None
        assert abs(offset) < 1.0  # both clocks are this machine's
        assert abs(raw) < 1.0
    assert value("gpt_trader_realtime_bars_total", timeframe="1s", status="final") > 0  # type: ignore[operator]
    # frame receipt -> bars updated, sampled from the frames the pipeline processed
    processed = value("gpt_trader_realtime_receive_to_processed_seconds_count", source="pipeline")
    assert processed is not None
    assert processed > 0
    assert value("gpt_trader_realtime_receive_to_processed_seconds_bucket", source="pipeline", le="0.1") > 0  # type: ignore[operator]
    # rendered for scraping, and only on the registry passed in
    text = generate_latest(registry).decode()
    assert 'gpt_trader_realtime_failovers_total{symbol="AAPL"}' in text
    assert REGISTRY.get_sample_value("gpt_trader_realtime_failovers_total", {"symbol": "AAPL"}) is None
