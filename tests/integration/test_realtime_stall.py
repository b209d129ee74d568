"""A stalled client loses nothing: while frames the exchange sent wait unread (in websockets' buffer or the socket),
bar windows are not closed by the exchange's clock, so no tick is refused as late; a truly quiet feed still closes
its windows by the clock."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta

import numpy as np

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, ExchangeThread, LocalExchange
from gpt_trader.realtime.feed import unread_input
from gpt_trader.realtime.replay import load_series
from tests.support.waiting import wait_until as _wait_until

ENV = {"APCA_API_KEY_ID": "PKTESTKEYID7Q2W9", "APCA_API_SECRET_KEY": "secret", "POLYGON_API_KEY": "polygon-key"}
FAST = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "tick_interval_ms": 10.0, "start_timeout_secs": 5.0}
PROTOCOLS = {DataSource.ALPACA: "alpaca", DataSource.BINANCE: "binance", DataSource.POLYGON: "polygon"}


class JumpClock:
    """Our wall clock plus a jump the test sets: a stall of any length without waiting for it."""

    def __init__(self) -> None:
        self.jump = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.jump


# Polled every 5 ms: these scenarios watch short windows.
wait_until = functools.partial(_wait_until, step=0.005)


def bundled_rows(symbol: str, n: int) -> np.ndarray:
    s = load_series(symbol)
    return np.column_stack([s.ts[:n], s.open[:n], s.high[:n], s.low[:n], s.close[:n], s.volume[:n]])


def bar_rows(bars) -> np.ndarray:
    return np.array([[b.ts_ns, b.open, b.high, b.low, b.close, b.volume] for b in bars])


def gate_receive(p: RealtimePipeline, after: int) -> tuple[asyncio.Event, asyncio.Event, list[int]]:
    """Make the feed's receive loop stop before its `after`+1-th frame until released (the consumer stalls between
    frames; the event loop, the ticker and the socket keep running). Returns (stalled, release, frames read)."""
    stalled, release, count = asyncio.Event(), asyncio.Event(), [0]
    on_state = p._on_state

    def hook(feed, state):  # run_feed reports "connected" just before it binds `ws.recv` for its loop
        if state == "connected":
            recv = feed.ws.recv

            async def gated(*args, **kwargs):
                if count[0] >= after and not release.is_set():
                    stalled.set()
                    await release.wait()
                count[0] += 1
                return await recv(*args, **kwargs)

            feed.ws.recv = gated
        on_state(feed, state)

    p._on_state = hook  # type: ignore[method-assign]
    return stalled, release, count


def count_ticks(p: RealtimePipeline) -> list[int]:
    """Count the pipeline ticker's passes."""
    passes = [0]
    check = p._check_gaps

    def counted(wall):
        passes[0] += 1
        check(wall)

    p._check_gaps = counted  # type: ignore[method-assign]
    return passes


def test_stalled_consumer_with_frames_unread_closes_no_window_by_clock():
    """Replayed real daily bars; the consumer stalls after 5 bars while the exchange sends the other 25 and the
    clock jumps 400 days (longer than the stall's whole tape): no window may close before its trades are read."""
    n_bars, tpb, after = 30, 20, 5

    async def scenario(source: DataSource) -> None:
        ex = LocalExchange(
            ExchangeConfig(feed="replay", rate=0, ticks_per_bar=tpb, batch=tpb, timestamps="original",
                           max_ticks=n_bars * tpb, quote_every=0)
        )  # fmt: skip
        await ex.start()
        clock = JumpClock()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
        p = RealtimePipeline(
            [StreamConfig(source, ["SPX"], url=ex.url(PROTOCOLS[source]))],
            config, bus=InProcessBus(), environ=ENV, clock=clock,
        )  # fmt: skip
        stalled, release, read = gate_receive(p, after * (tpb if source == DataSource.BINANCE else 1))
        passes = count_ticks(p)
        try:
            await p.start(wait_for_data=False)
            assert await wait_until(stalled.is_set)
            # Everything the exchange will send is on its way into our socket, none of it read.
            assert await wait_until(
                lambda: (
                    ex.stats.ticks_sent == n_bars * tpb
                    and all(c.transport.get_write_buffer_size() == 0 for c in ex._connections)
                )
            )
            feed = p.feeds[0]
            assert await wait_until(lambda: unread_input(feed.ws))
            seen_before = p.ticks_accepted
            clock.jump = timedelta(days=400)
            start = passes[0]
            assert await wait_until(lambda: passes[0] >= start + 5)  # the ticker ran while the frames waited
            assert feed.has_unread()
            release.set()
            assert await wait_until(lambda: p.ticks_accepted + p.dead_letters.total >= n_bars * tpb)
            p.flush_bars()
            done = p.final_bars("SPX", "1d")
        finally:
            await p.close()
            await ex.stop()
        assert seen_before < n_bars * tpb / 2
        assert read[0] > after
        assert p.dead_letters.by_reason() == {}  # nothing refused as late
        assert p.stats()["bars"]["1d"]["late"] == 0
        assert p.ticks_accepted == n_bars * tpb
        np.testing.assert_array_equal(bar_rows(done)[:, 0].astype(np.int64), bundled_rows("SPX", n_bars)[:, 0])
        np.testing.assert_allclose(bar_rows(done)[:, 1:], bundled_rows("SPX", n_bars)[:, 1:], rtol=1e-12)
        assert all(b.trades == tpb and not b.gap for b in done)

    for source in PROTOCOLS:
        asyncio.run(scenario(source))


def test_quiet_feed_still_closes_windows_by_the_clock():
    """The same tape read without a stall: once the feed is quiet with nothing unread, the source's clock closes
    the windows (final, no flush needed), as before."""
    n_bars, tpb = 12, 20

    async def scenario() -> None:
        ex = LocalExchange(
            ExchangeConfig(feed="replay", rate=0, ticks_per_bar=tpb, timestamps="original", max_ticks=n_bars * tpb,
                           quote_every=0)
        )  # fmt: skip
        await ex.start()
        clock = JumpClock()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
        p = RealtimePipeline(
            [StreamConfig(DataSource.BINANCE, ["SPX"], url=ex.url("binance"))],
            config, bus=InProcessBus(), environ=ENV, clock=clock,
        )  # fmt: skip
        try:
            await p.start()
            assert await wait_until(lambda: p.ticks_accepted == n_bars * tpb)
            assert await wait_until(lambda: not p.feeds[0].has_unread())
            before = len(p.final_bars("SPX", "1d"))
            clock.jump = timedelta(days=400)
            assert await wait_until(lambda: len(p.final_bars("SPX", "1d")) == n_bars)
            done = p.final_bars("SPX", "1d")
        finally:
            await p.close()
            await ex.stop()
        assert before < n_bars  # the last window was open until the clock closed it
        np.testing.assert_allclose(bar_rows(done)[:, 1:], bundled_rows("SPX", n_bars)[:, 1:], rtol=1e-12)
        assert p.dead_letters.total == 0

    asyncio.run(scenario())


class StallingBus(InProcessBus):
    """An in-process bus whose publish hangs for `stall_secs` once armed (a Redis hiccup)."""

    def __init__(self, stall_secs: float) -> None:
        super().__init__()
        self.stall_secs = stall_secs
        self.armed = False
        self.stalls = 0

    async def publish(self, batches):
        if self.armed:
            self.armed = False
            self.stalls += 1
            await asyncio.sleep(self.stall_secs)
        return await super().publish(batches)


def test_consumer_blocked_by_bus_backpressure_no_tick_late():
    """The benchmark's case: one trade per frame (Binance) stamped with the exchange's clock, in its own thread. The
    bus stalls for 1.6 s (longer than a 1 s window plus the lateness), the feed waits for it (backpressure: TCP then
    slows the exchange), the ticker keeps running: it must not close the windows of the trades queued meanwhile."""
    total = 4000  # 4 s at 1000 ticks/s

    async def scenario(ex: ExchangeThread) -> None:
        config = RealtimeConfig(timeframes=["1s"], lateness_ms=100, max_pending_ticks=50, **FAST)
        bus = StallingBus(1.6)
        p = RealtimePipeline(
            [StreamConfig(DataSource.BINANCE, ["AAPL", "MSFT"], url=ex.url("binance"))], config, bus=bus, environ=ENV
        )
        passes = count_ticks(p)
        try:
            await p.start()
            assert await wait_until(lambda: p.ticks_accepted > 200)
            sent, accepted, held = ex.exchange.stats.ticks_sent, p.ticks_accepted, passes[0]
            bus.armed = True
            assert await wait_until(lambda: bus.stalls == 1 and not bus.armed)
            assert await wait_until(lambda: passes[0] > held + 50)  # >= 0.5 s of ticker passes inside the stall
            assert p.ticks_accepted - accepted <= 100  # the consumer is blocked
            assert p.feeds[0].has_unread()
            assert ex.exchange.stats.ticks_sent - sent > 200  # and the exchange kept sending
            assert await wait_until(lambda: p.ticks_accepted + p.dead_letters.total >= total, 20)
        finally:
            await p.close()
        assert p.dead_letters.by_reason() == {}
        assert p.stats()["bars"]["1s"]["late"] == 0
        assert p.ticks_accepted == ex.exchange.stats.ticks_sent == total

    config = ExchangeConfig(feed="simulated", rate=1000, timestamps="now", quote_every=0, max_ticks=total)
    with ExchangeThread(config) as ex:
        asyncio.run(scenario(ex))
