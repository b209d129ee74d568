"""The live session's edges for real: closed bars consumed from Redis Streams through a consumer group (acked only
after the commit, redelivered after a crash), and orders through the Alpaca broker adapter against a local server
speaking Alpaca's Trading API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal

import pytest

from gpt_trader.realtime.bars import LiveBar
from gpt_trader.realtime.bus import RedisStreamsBus
from gpt_trader.trading.bus_bars import BusBarReader
from gpt_trader.trading.runner import LiveOptions, run_live
from tests.support.alpaca_trading_server import KEY_ID, SECRET_KEY, AlpacaTradingServer

pytestmark = pytest.mark.integration
REDIS = "redis://127.0.0.1:6379/0"
DAY_NS = 86_400 * 1_000_000_000


def _bar(k: int, status: str, revision: int = 0) -> dict[str, str]:
    ts = 1_514_764_800 * 1_000_000_000 + k * DAY_NS  # 2018-01-01 + k days
    bar = LiveBar("SPX", "1d", ts, 100.0 + k, 101.0 + k, 99.0 + k, 100.5 + k, 1e6, 100.2 + k, 20, status,
                  False, False, revision, "alpaca", ts + DAY_NS)  # fmt: skip
    return bar.to_fields()


def test_bus_bar_reader_redelivers_final_bars_not_acked_before_a_crash():
    async def scenario() -> None:
        prefix = f"test:{uuid.uuid4().hex[:12]}:"
        bus = RedisStreamsBus(REDIS, prefix=prefix, ttl_secs=600)
        try:
            reader = BusBarReader(bus, ["SPX"], "1d", group="session-t")
            await reader.start()
            entries = [_bar(0, "provisional"), _bar(0, "final", 1), _bar(1, "final"), _bar(2, "final")]
            await bus.publish({"bars:1d:SPX": entries, "bars:1m:SPX": [_bar(9, "final")]})
            got = await reader.read(block_ms=500)
            assert [b.bar.ts_ns for b in got] == [LiveBar.from_fields(e).ts_ns for e in entries[1:]]
            assert all(b.bar.final for b in got)
            await reader.ack(got[:1])  # committed the first, then the process dies
            assert await reader.backlog() == 2  # the provisional revision was acked on read
            restarted = BusBarReader(bus, ["SPX"], "1d", group="session-t")
            await restarted.start()
            again = await restarted.pending()
            assert [b.bar.ts_ns for b in again] == [b.bar.ts_ns for b in got[1:]]
            assert await restarted.read(block_ms=50) == []  # nothing new: only the pending ones come back
            await restarted.ack(again)
            assert await restarted.backlog() == 0
        finally:
            await bus.delete_prefix()
            await bus.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_live_session_over_redis_streams_commits_then_acks_every_bar(live_overlay):
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    _, settings = live_overlay(f"realtime: {{bus: redis, redis_url: '{REDIS}', bus_prefix: '{prefix}'}}\n")
    options = LiveOptions(symbols=("SPX", "IXIC"), start=date(2018, 6, 1), end=date(2018, 7, 1), rate=0,
                          duration_secs=60, strategy="redis")  # fmt: skip
    report = asyncio.run(run_live(settings, options))
    assert report.bars_streamed == report.summary["bars"] > 2 * 18

    async def check() -> None:
        bus = RedisStreamsBus(REDIS, prefix=f"{prefix}live:redis:", ttl_secs=600)
        try:
            for symbol in ("SPX", "IXIC"):
                assert await bus.length(f"bars:1d:{symbol}") >= report.summary["bars"] // 2
                assert await bus.pending_count(f"bars:1d:{symbol}", "session-redis") == 0
        finally:
            await RedisStreamsBus(REDIS, prefix=prefix, ttl_secs=600).delete_prefix()
            await bus.close()

    asyncio.run(check())


@pytest.mark.slow
def test_live_session_trades_through_the_alpaca_broker_adapter(live_overlay, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    with AlpacaTradingServer(cash=Decimal(100_000), auto_fill=True) as server:
        _, settings = live_overlay(
            trading=f", execution: {{broker: alpaca, alpaca_base_url: '{server.url}', backoff_base_secs: 0.01}}"
        )
        assert settings.trading.execution.broker == "alpaca"

        def mark(row: dict) -> None:  # the account's market moves with the replayed bars
            server.set_price(row["symbol"], Decimal(str(row["close"])))

        options = LiveOptions(symbols=("SPX",), start=date(2018, 6, 1), end=date(2018, 7, 1), rate=0,
                              duration_secs=60, strategy="alpaca")  # fmt: skip
        server.set_price("SPX", Decimal("2700"))
        report = asyncio.run(run_live(settings, options, on_bar=mark))
        posted = [r for r in server.requests if r.method == "POST" and r.path == "/v2/orders"]
        assert posted, "no order reached the broker"
        client_ids = [o["client_order_id"] for o in server.orders.values()]
        assert len(client_ids) == len(set(client_ids))  # idempotent: one order per client id
        qty, _ = server.positions["SPX"]
        assert float(qty) == report.summary["positions"]["SPX"] > 0  # the session's book is the broker's


def _exchange_from(day: date, rate: float):
    """A local exchange replaying bundled SPX from `day` over Alpaca's protocol (real trades of real bars)."""
    import time

    import numpy as np

    from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
    from gpt_trader.realtime.replay import load_series

    series = load_series("SPX")
    first = int(np.searchsorted(series.ts, np.datetime64(day, "ns").astype(np.int64)))
    return LocalExchange(
        ExchangeConfig(feed="replay", rate=rate, ticks_per_bar=20, timestamps="original", start_bar=first,
                       quote_every=0, epoch_ns=time.time_ns() + 200_000_000)
    )  # fmt: skip


def _sources_yaml(url: str) -> str:
    return (
        f"realtime: {{sources: [{{type: alpaca, symbols: [SPX], url: '{url}'}}], backfill: none, "
        "lateness_ms: 0, max_future_secs: null}\n"
    )


@pytest.mark.slow
def test_live_session_on_configured_sources_streams_and_trades(live_overlay, monkeypatch):
    """`feed="sources"`: the streams of `realtime.sources` (here an Alpaca-protocol exchange on loopback replaying
    real SPX trades from 2018-06-01); the features warm up on the stored bars before `start`."""
    monkeypatch.setenv("APCA_API_KEY_ID", "local-exchange")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "local-exchange")

    async def scenario():
        exchange = _exchange_from(date(2018, 6, 1), rate=0)
        await exchange.start()
        try:
            _, settings = live_overlay(_sources_yaml(exchange.url("alpaca")))
            options = LiveOptions(feed="sources", start=date(2018, 6, 1), duration_secs=60, max_bars=15,
                                  strategy="sources")  # fmt: skip
            return await run_live(settings, options)
        finally:
            await exchange.stop()

    report = asyncio.run(scenario())
    assert report.summary["bars"] == report.bars_streamed == 15
    assert report.summary["positions"]["SPX"] > 0  # warm features from the first live bar: the champions trade
    assert report.pipeline["ticks_accepted"] >= 14 * 20


@pytest.mark.slow
def test_live_session_hears_its_feed_go_down_and_alerts(live_overlay, monkeypatch):
    """The only source dies mid-session: the pipeline has no healthy source for SPX, the session is told, alerts,
    and sends an order that takes its long position flat (`stale_action: flat`; it fills when prices return)."""
    from gpt_trader.trading.state import StateStore
    from gpt_trader.trading.types import Side

    monkeypatch.setenv("APCA_API_KEY_ID", "local-exchange")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "local-exchange")
    _, settings = live_overlay(_sources_yaml("ws://127.0.0.1:1/unused"))  # the exchange's port comes below

    async def scenario():
        exchange = _exchange_from(date(2018, 6, 1), rate=100)  # 5 bars/s
        await exchange.start()
        configured = settings.realtime.sources[0].model_copy(update={"url": exchange.url("alpaca")})
        live = settings.model_copy(update={"realtime": settings.realtime.model_copy(update={"sources": [configured]})})
        options = LiveOptions(feed="sources", start=date(2018, 6, 1), duration_secs=7, strategy="down")
        decided = asyncio.Event()
        session = asyncio.ensure_future(
            run_live(live, options, on_bar=lambda row: decided.set() if row["bars"] >= 5 else None)
        )
        await asyncio.wait_for(decided.wait(), 30)
        await exchange.stop()  # the feed dies; the session runs on until its duration
        return await session

    report = asyncio.run(scenario())
    assert report.summary["bars"] >= 5
    held = report.summary["positions"]["SPX"]
    assert held > 0  # long when the feed died: the flattening order waits for a price
    assert any("SPX" in m and "feed" in m for _, m in report.alerts), report.alerts
    store = StateStore(f"sqlite:///{settings.paths.data}/trading/down.db", strategy="down")
    try:
        open_orders = store.load(Decimal(100_000)).open_orders
    finally:
        store.close()
    assert [(o.order.symbol, o.order.side, float(o.order.quantity)) for o in open_orders] == [("SPX", Side.SELL, held)]
