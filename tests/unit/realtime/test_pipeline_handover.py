"""Failover and failback between two feeds count every trade exactly once, whichever feed runs ahead.

The feeds are driven frame by frame (no sockets), so the interleavings that are races on a real network are
reproduced deterministically here: the standby behind the active feed, and ahead of it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import _encode, _FastIso

T0 = 1_700_000_000_000_000_000  # ns; every trade on its own millisecond, as in the exchange's replay
ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s", "POLYGON_API_KEY": "p"}


def trades(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trades lo..hi-1: distinct sizes so any double count changes the volume."""
    ids = np.arange(lo, hi, dtype=np.int64)
    return T0 + ids * 1_000_000 + 123, 100.0 + ids * 0.01, (ids + 1).astype(np.float64), ids


def frame(protocol: str, lo: int, hi: int) -> str | bytes:
    return _encode(protocol, [("SPX", *trades(lo, hi))], False, 0, _FastIso())[0]  # type: ignore[arg-type]


async def _pipeline(config: RealtimeConfig | None = None, at_secs: float = 0.1) -> RealtimePipeline:
    """Alpaca then Polygon for SPX, connected, on a clock `at_secs` after T0 (default: all trades inside one open
    minute, no future check)."""
    config = config or RealtimeConfig(timeframes=["1m"], lateness_ms=0, max_future_secs=None, failback_after_secs=0.0)
    p = RealtimePipeline(
        [
            StreamConfig(DataSource.ALPACA, ["SPX"], url="ws://127.0.0.1:1/v2/iex"),
            StreamConfig(DataSource.POLYGON, ["SPX"], url="ws://127.0.0.1:1/stocks"),
        ],
        config,
        bus=InProcessBus(),
        environ=ENV,
        clock=SimClock(datetime.fromtimestamp(T0 / 1e9 + at_secs, UTC)),
    )
    await p._build_feeds()
    for feed in p.feeds:
        feed.health.connected = True
    return p


def _volume(lo: int, hi: int) -> float:
    return float(trades(lo, hi)[2].sum())


@pytest.mark.parametrize("standby_lead", [-5, 0, 5], ids=["standby-behind", "level", "standby-ahead"])
def test_failover_and_failback_count_each_trade_once(standby_lead: int) -> None:
    async def scenario() -> None:
        p = await _pipeline()
        alpaca, polygon = p.feeds
        feed = {"alpaca": alpaca, "polygon": polygon}

        async def send(name: str, lo: int, hi: int) -> None:
            if hi > lo:
                await p._on_frame(feed[name], frame(name, lo, hi), T0)

        # Alpaca active up to 20; polygon (standby) at 20 + lead.
        await send("alpaca", 0, 20)
        await send("polygon", 0, 20 + standby_lead)
        assert p.active_source("SPX") == "alpaca"
        # Alpaca drops: polygon takes over from its shadow, then runs on to 40.
        p._on_state(alpaca, "disconnected")
        assert p.active_source("SPX") == "polygon"
        await send("polygon", 20 + standby_lead, 40)
        # Alpaca comes back at 40 + lead and takes over again (failback), then both run on to 60.
        alpaca.health.connected = True
        alpaca.connected_since_ns = 0
        await send("alpaca", 20, 40 + standby_lead)
        p._reroute("SPX")
        assert p.active_source("SPX") == "alpaca"
        await send("alpaca", 40 + standby_lead, 60)
        await send("polygon", 40, 60)

        bars = p.get_bars("SPX", "1m")
        assert p.ticks_accepted == 60
        assert float(bars["volume"].sum()) == _volume(0, 60)
        assert p.dead_letters.total == 0

    asyncio.run(scenario())


def _sender(p: RealtimePipeline):
    """`send(feed name, lo, hi)`: trades lo..hi-1 as one frame of that feed."""
    feed = {f.name: f for f in p.feeds}

    async def send(name: str, lo: int, hi: int) -> None:
        await p._on_frame(feed[name], frame(name, lo, hi), T0)

    return send


async def _primary_back_ahead(p: RealtimePipeline, connected_since_ns: int):
    """Alpaca counted 0..19 and dropped; the backup (Polygon) lags at 29 when Alpaca comes back already at 35,
    and a failback check runs. Returns the `send` used."""
    alpaca = p.feeds[0]
    send = _sender(p)
    await send("alpaca", 0, 20)
    await send("polygon", 0, 20)
    p._on_state(alpaca, "disconnected")
    await send("polygon", 20, 30)  # the backup lags: it has counted up to 29
    alpaca.health.connected = True
    alpaca.connected_since_ns = connected_since_ns
    await send("alpaca", 35, 40)  # the primary is back, already at 35
    p._reroute("SPX")
    return send


def test_failback_waits_until_the_recovered_feed_overlaps_what_was_counted() -> None:
    """The recovered primary comes back ahead of the lagging backup: its standby trades start after the last one
    counted. Switching then would flag a gap that lost nothing, so failback waits until the backup has counted up to
    the primary's first standby trade, then hands over with no gap and no double count."""

    async def scenario() -> None:
        p = await _pipeline()
        # Fresh: `failback_after_secs` is 0, the max wait 10 s.
        send = await _primary_back_ahead(p, connected_since_ns=p._now_ns())
        assert p.active_source("SPX") == "polygon"  # 30..34 are not in the primary's standby trades yet
        await send("polygon", 30, 36)  # the backup reaches 35: now the standby trades overlap
        p._reroute("SPX")
        assert p.active_source("SPX") == "alpaca"
        await send("alpaca", 40, 50)
        await send("polygon", 36, 50)

        bars = p.get_bars("SPX", "1m")
        assert p.ticks_accepted == 50
        assert float(bars["volume"].sum()) == _volume(0, 50)
        # No feed gap was opened or backfilled; the one bar is flagged only because the stream joined 20 s into it.
        assert not any(agg.pending_gaps() for agg in p.aggregators)
        assert not bars["backfilled"].any()
        assert bars["gap"].tolist() == [True]
        assert p.dead_letters.total == 0

    asyncio.run(scenario())


def test_failback_gives_up_waiting_for_overlap_after_the_max_wait() -> None:
    """A backup that never catches up does not pin the symbol to it: after `failback_max_wait_secs` the primary
    takes over and the window that may have missed trades is flagged as a gap."""

    async def scenario() -> None:
        p = await _pipeline()
        p.config = p.config.model_copy(update={"failback_max_wait_secs": 0.0})
        await _primary_back_ahead(p, connected_since_ns=0)
        assert p.active_source("SPX") == "alpaca"
        bars = p.get_bars("SPX", "1m")
        assert bars["gap"].any()

    asyncio.run(scenario())


def test_a_bad_print_before_a_failover_loses_no_real_trade() -> None:
    """The active feed's bad print, stamped 3 s ahead of its clock, is set aside by the clock estimator and held
    from the bars' frontier; it must not pass for the last trade counted either: a failover then took the standby's
    trades only after that time (and dropped its live ones until then) without a gap to say so."""

    async def scenario() -> None:
        p = await _pipeline(RealtimeConfig(timeframes=["1s"], lateness_ms=100, failback_after_secs=0.0), 0.3)
        alpaca, polygon = p.feeds
        feed = {"alpaca": alpaca, "polygon": polygon}

        async def send(name: str, lo: int, hi: int, ahead_ns: int = 0) -> None:
            ts, px, sz, ids = trades(lo, hi)
            raw = _encode(name, [("SPX", ts + ahead_ns, px, sz, ids + (10_000 if ahead_ns else 0))], False, 0,
                          _FastIso())[0]  # fmt: skip
            await p._on_frame(feed[name], raw, int(ts[-1]) + 2_000_000)  # received 2 ms after its newest trade

        for lo in range(0, 100, 10):
            await send("alpaca", lo, lo + 10)
            await send("polygon", lo, lo + 10)
        await send("alpaca", 99, 100, ahead_ns=3_000_000_000)  # the bad print
        assert alpaca.estimator.outliers == 1
        for lo in range(100, 150, 10):
            await send("alpaca", lo, lo + 10)
        for lo in range(100, 200, 10):
            await send("polygon", lo, lo + 10)
        p._on_state(alpaca, "disconnected")
        assert p.active_source("SPX") == "polygon"
        for lo in range(200, 300, 10):
            await send("polygon", lo, lo + 10)

        assert p.dead_letters.total == 0
        assert p.ticks_accepted == 301  # every real trade once, and the bad print in its own window
        first = p.aggregators[0].open_windows("SPX")[0]
        assert (first.ts_ns, first.trades, first.volume) == (T0, 300, _volume(0, 300))
        assert not p.aggregators[0].pending_gaps()  # nothing missed, nothing to backfill

    asyncio.run(scenario())
