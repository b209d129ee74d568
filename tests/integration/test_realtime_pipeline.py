"""The pipeline against the local exchange on loopback: the seed's Example 3, every protocol end to end, replayed real
bars equal the originals, reconnect + backfill after the exchange is killed, failover and failback, clock skew."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig, StreamType
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, ExchangeThread, LocalExchange
from gpt_trader.realtime.replay import load_series
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "APCA_API_KEY_ID": "PKTESTKEYID7Q2W9",
    "APCA_API_SECRET_KEY": "alpaca-secret-Zx81-never-log-me",
    "POLYGON_API_KEY": "polygon-test-key",
}
FAST = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "tick_interval_ms": 10.0, "start_timeout_secs": 5.0}
PROTOCOLS = {
    DataSource.ALPACA: "alpaca",
    DataSource.BINANCE: "binance",
    DataSource.POLYGON: "polygon",
    DataSource.IEX: "iex",
}


def bundled_rows(symbol: str, start_bar: int, n: int) -> np.ndarray:
    s = load_series(symbol)
    sl = slice(start_bar, start_bar + n)
    return np.column_stack([s.ts[sl], s.open[sl], s.high[sl], s.low[sl], s.close[sl], s.volume[sl]])


def bar_rows(bars) -> np.ndarray:
    return np.array([[b.ts_ns, b.open, b.high, b.low, b.close, b.volume] for b in bars])


# --- the seed's Example 3, verbatim ---------------------------------------------------------------------------
EXAMPLE_3 = """
from gpt_trader.realtime import RealtimePipeline, StreamConfig
from gpt_trader.realtime import DataSource, StreamType  # the one added line: the seed uses them without importing
import asyncio

# Configure streams
configs = [
    StreamConfig(
        source=DataSource.ALPACA,
        symbols=["AAPL", "GOOGL"],
        stream_types=[StreamType.TRADES, StreamType.QUOTES]
    )
]

# Create pipeline
pipeline = RealtimePipeline(configs)

# Start streaming
async def stream():
    await pipeline.start()

    # Get live data
    while True:
        data = pipeline.get_live_data("AAPL")
        print(f"AAPL: ${data['price'].iloc[-1]:.2f}")
        await asyncio.sleep(1)

asyncio.run(stream())
"""


@pytest.mark.slow
def test_seed_example_3_runs_verbatim_against_local_exchange():
    with ExchangeThread(ExchangeConfig(rate=2000, timestamps="now")) as ex:
        env = {**os.environ, **ENV, "GPT_TRADER_REALTIME__ENDPOINTS__ALPACA": ex.url("alpaca"), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(EXAMPLE_3)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        try:
            deadline = time.monotonic() + 60
            while len(lines) < 3 and time.monotonic() < deadline:  # the example loops forever: stop after 3 prints
                line = proc.stdout.readline() if proc.stdout else ""
                if not line:
                    break
                lines.append(line.strip())
        finally:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert len(lines) == 3, err[-2000:]
    for line in lines:
        assert line.startswith("AAPL: $")
        assert float(line.removeprefix("AAPL: $")) > 0


# --- every protocol: replayed real bars equal the originals ----------------------------------------------------
@pytest.mark.parametrize("source", list(PROTOCOLS))
def test_pipeline_replay_each_protocol_bars_equal_bundled(source):
    n_bars, tpb = 25, 20

    async def scenario() -> None:
        ex = LocalExchange(
            ExchangeConfig(
                feed="replay", rate=0, ticks_per_bar=tpb, timestamps="original", max_ticks=n_bars * tpb, quote_every=5
            )
        )
        await ex.start()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
        types = [StreamType.TRADES, StreamType.QUOTES]
        p = RealtimePipeline(
            [StreamConfig(source, ["SPX"], types, url=ex.url(PROTOCOLS[source]))],
            config,
            bus=InProcessBus(),
            environ=ENV,
        )
        try:
            await p.start()
            assert await wait_until(lambda: p.ticks_accepted >= n_bars * tpb)
            final = [b for b in p.flush_bars() if b.symbol == "SPX"]
            done = p.final_bars("SPX", "1d")
        finally:
            await p.close()
            await ex.stop()
        assert len(done) == n_bars
        assert len(final) >= 1
        np.testing.assert_array_equal(
            bar_rows(done)[:, 0].astype(np.int64), bundled_rows("SPX", 0, n_bars)[:, 0].astype(np.int64)
        )
        np.testing.assert_allclose(bar_rows(done)[:, 1:], bundled_rows("SPX", 0, n_bars)[:, 1:], rtol=1e-12)
        assert all(b.trades == tpb and not b.gap for b in done)
        live = p.get_live_data("SPX")
        assert {"price", "size", "bid", "ask", "event"} <= set(live.columns)
        assert (live["event"] == "quote").sum() == n_bars * tpb // 5
        assert p.dead_letters.total == 0

    asyncio.run(scenario())


# --- kill the exchange mid-stream: reconnect, gap, backfill; no bar lost -----------------------------------------
@pytest.mark.slow
def test_pipeline_exchange_killed_and_restarted_no_bar_lost():
    load_series("SPX")  # load the tape before the clock starts

    async def scenario() -> None:
        epoch = time.time_ns() + 300_000_000  # the tape starts after the client is connected
        cfg = ExchangeConfig(feed="replay", rate=400, ticks_per_bar=20, timestamps="original", epoch_ns=epoch)
        ex = LocalExchange(cfg)
        port = await ex.start()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, ["SPX"], url=ex.url("alpaca"))],
            config,
            bus=InProcessBus(),
            environ=ENV,
            history=BundledSource(),
        )
        try:
            await p.start()
            await asyncio.sleep(1.2)
            await ex.stop()  # ~10 bars (0.5 s) will be missed entirely
            await asyncio.sleep(0.5)
            ex = LocalExchange(replace(cfg, port=port))
            await ex.start()
            assert await wait_until(lambda: p.feeds[0].health.connected, 5)
            await asyncio.sleep(1.0)
            assert await wait_until(lambda: p.stats()["pending_gaps"] == 0, 5)
            await asyncio.sleep(0.1)
            done = p.final_bars("SPX", "1d")
        finally:
            await p.close()
            await ex.stop()
        assert p.feeds[0].health.reconnects >= 1
        series = load_series("SPX")
        first = int(np.searchsorted(series.ts, done[0].ts_ns))
        want = bundled_rows("SPX", first, len(done))
        got = bar_rows(done)
        # every trading day from the first to the last final bar is present, equal to the original bar
        np.testing.assert_array_equal(got[:, 0].astype(np.int64), want[:, 0].astype(np.int64))
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-12)
        backfilled = [b for b in done if b.backfilled]
        assert len(backfilled) >= 8  # the ~10 days streamed while the exchange was down, plus the edges
        assert not any(b.gap for b in done)
        assert len(done) >= 35

    asyncio.run(scenario())


# --- failover to the backup source and failback to the primary ---------------------------------------------------
@pytest.mark.slow
def test_pipeline_primary_killed_failover_then_failback_bars_complete():
    load_series("SPX")  # load the tape before the clock starts

    async def scenario() -> None:
        epoch = time.time_ns() + 300_000_000
        cfg = ExchangeConfig(
            feed="replay", rate=400, ticks_per_bar=20, timestamps="original", epoch_ns=epoch, quote_every=0
        )
        primary, backup = LocalExchange(cfg), LocalExchange(cfg)
        port = await primary.start()
        await backup.start()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, failback_after_secs=0.3, **FAST)
        configs = [
            StreamConfig(DataSource.ALPACA, ["SPX"], url=primary.url("alpaca")),
            StreamConfig(DataSource.POLYGON, ["SPX"], url=backup.url("polygon")),
        ]
        p = RealtimePipeline(configs, config, bus=InProcessBus(), environ=ENV)
        switches: list[str | None] = []
        try:
            await p.start()
            await asyncio.sleep(0.8)
            switches.append(p.active_source("SPX"))
            await primary.stop()
            assert await wait_until(lambda: p.active_source("SPX") == "polygon", 3)
            switches.append(p.active_source("SPX"))
            await asyncio.sleep(0.6)
            primary = LocalExchange(replace(cfg, port=port))
            await primary.start()
            assert await wait_until(lambda: p.active_source("SPX") == "alpaca", 5)
            switches.append(p.active_source("SPX"))
            await asyncio.sleep(0.6)
            done = p.final_bars("SPX", "1d")
            health = p.health()
        finally:
            await p.close()
            await primary.stop()
            await backup.stop()
        assert switches == ["alpaca", "polygon", "alpaca"]
        series = load_series("SPX")
        first = int(np.searchsorted(series.ts, done[0].ts_ns))
        got, want = bar_rows(done), bundled_rows("SPX", first, len(done))
        np.testing.assert_array_equal(got[:, 0].astype(np.int64), want[:, 0].astype(np.int64))
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-12)  # the handovers lost and doubled nothing
        assert not any(b.gap or b.backfilled for b in done)
        assert health["alpaca"]["reconnects"] >= 1
        assert health["polygon"]["connected"]

    asyncio.run(scenario())


# --- clock skew -------------------------------------------------------------------------------------------------
def test_pipeline_skewed_exchange_clock_offset_estimated_and_corrected():
    skew = 3.0  # the exchange clock runs 3 s ahead of ours

    async def scenario() -> None:
        ex = LocalExchange(ExchangeConfig(feed="simulated", rate=2000, timestamps="now", skew_secs=skew))
        await ex.start()
        config = RealtimeConfig(timeframes=["1s"], bar_time="corrected", **FAST)
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, ["AAPL"], url=ex.url("alpaca"))], config, bus=InProcessBus(), environ=ENV
        )
        try:
            await p.start()
            await asyncio.sleep(1.5)
            offset_ms = p.health()["alpaca"]["clock_offset_ms"]
            live = p.get_live_data("AAPL")
            bars = p.get_bars("AAPL", "1s")
            now = time.time_ns()
        finally:
            await p.close()
            await ex.stop()
        assert offset_ms == pytest.approx(-skew * 1000, abs=100)
        trades = live[live["event"] == "trade"]
        assert ((trades["ts_event"] - trades["ts_init"]).dt.total_seconds() - skew).abs().max() < 0.5  # raw: 3 s ahead
        lag = (trades["ts_init"] - trades["ts_corrected"]).dt.total_seconds()
        assert lag.abs().max() < 0.5  # corrected exchange times agree with receive times
        assert abs(bars["ts"].iloc[-1].value - now) < 2.5e9  # bars are on our clock, not 3 s in the future
        assert p.dead_letters.total == 0

    asyncio.run(scenario())


def test_pipeline_replay_source_embedded_exchange_streams_bars():
    async def scenario() -> None:
        config = RealtimeConfig(
            timeframes=["1d"], lateness_ms=0, max_future_secs=None, replay={"rate": 0, "ticks_per_bar": 20}, **FAST
        )
        p = RealtimePipeline([StreamConfig(DataSource.REPLAY, ["GOOGL"])], config, bus=InProcessBus())
        try:
            await p.start()
            assert await wait_until(lambda: len(p.final_bars("GOOGL", "1d")) >= 10, 10)
            done = p.final_bars("GOOGL", "1d")[:10]
            await p._flush()
            entries = await p.bus.read_range("bars:1d:GOOGL")
        finally:
            await p.close()
        np.testing.assert_allclose(bar_rows(done)[:, 1:], bundled_rows("GOOGL", 0, 10)[:, 1:], rtol=1e-12)
        assert entries

    asyncio.run(scenario())


async def _first_alpaca_trade_id(url: str, symbol: str = "SPX") -> int:
    """Connect to the local exchange's Alpaca endpoint, authenticate, subscribe to `symbol`'s trades and return the
    id (the tape's tick index) of the first trade received."""
    import orjson
    from websockets.asyncio.client import connect

    async with connect(url, proxy=None) as ws:
        await ws.recv()
        await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": "s"}))
        await ws.recv()
        await ws.send(orjson.dumps({"action": "subscribe", "trades": [symbol]}))
        while True:
            trades = [m for m in orjson.loads(await asyncio.wait_for(ws.recv(), 5)) if m.get("T") == "t"]
            if trades:
                return int(trades[0]["i"])


@pytest.mark.parametrize("start_on_subscribe", [True, False])
def test_exchange_tape_starts_at_the_first_subscription(start_on_subscribe):
    """With `start_on_subscribe`, a client that connects a second after the server started still gets the tape from
    its first trade; without it (the default: a market runs whether anyone listens) it joins where the tape is."""

    async def first_trade_id() -> int:
        cfg = ExchangeConfig(feed="replay", rate=200, timestamps="original", start_on_subscribe=start_on_subscribe)
        ex = LocalExchange(cfg)
        await ex.start()
        try:
            await asyncio.sleep(1.0)  # a slow client
            return await _first_alpaca_trade_id(ex.url("alpaca"))
        finally:
            await ex.stop()

    first = asyncio.run(first_trade_id())
    if start_on_subscribe:
        assert first == 0
    else:
        assert first >= 100  # about 200 trades went by before the client subscribed


def test_exchange_restarted_before_anyone_subscribed_still_starts_its_tape_at_the_first_subscription():
    """A restart passes the pacing epoch on; with `start_on_subscribe` and no subscriber yet there is none (it used
    to pass 0, and the tape was over before it began)."""
    ex = ExchangeThread(ExchangeConfig(feed="replay", rate=200, timestamps="original", start_on_subscribe=True))
    ex.start()
    try:
        ex.kill()
        ex.restart()
        assert ex.exchange.epoch_ns is None
        assert asyncio.run(_first_alpaca_trade_id(ex.url("alpaca"))) == 0
    finally:
        ex.stop()
