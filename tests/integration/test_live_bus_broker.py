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
