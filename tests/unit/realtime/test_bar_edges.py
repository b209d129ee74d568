"""Bars at the edges an adversarial review found, each of which once went wrong: a first trade stamped a year ahead
(it seeded the clock estimate and made every real trade late), outages longer than the backfill timeout (never
backfilled), the window where trades resume after an unfilled outage (not flagged as a gap), a backfill re-emitting
a bar already final or emitting a flat bar for an empty kline, a VWAP one ulp outside [low, high], and weekly
windows (Thursday to Wednesday)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bars import BarAggregator, LiveBar
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S


def _trade(t_ms: int, price: float, tid: int) -> str:
    data = f'"e":"trade","E":{t_ms},"s":"AAA","t":{tid},"p":"{price}","q":"1","T":{t_ms},"m":false,"M":true'
    return f'{{"stream":"aaa@trade","data":{{{data}}}}}'


class _Clocked:
    """A Binance-fed pipeline on a settable wall clock, collecting every emitted bar."""

    def __init__(self, config: RealtimeConfig, history: Any = None) -> None:
        self.p = RealtimePipeline(
            [StreamConfig(DataSource.BINANCE, ["AAA"], url="ws://127.0.0.1:9")], config, bus=InProcessBus(),
            history=history,
        )  # fmt: skip
        self.wall = T0
        self.p._now_ns = lambda: self.wall  # type: ignore[method-assign]
        self.bars: list[LiveBar] = []
        self.p.add_bar_listener(self.bars.append)
        self.tid = 0

    async def build(self) -> None:
        await self.p._build_feeds()
        self.feed = self.p.feeds[0]
        self.feed.health.connected = True

    async def trade(self, t_ns: int, price: float = 100.0) -> None:
        self.wall = t_ns
        self.tid += 1
        await self.p._on_frame(self.feed, _trade(t_ns // MS, price, self.tid), t_ns)

    async def outage(self, start_ns: int, end_ns: int) -> None:
        self.wall = start_ns
        self.p._on_state(self.feed, "disconnected")
        self.wall = end_ns
        self.p._on_state(self.feed, "connected")

    async def settle(self, rounds: int = 5, step_ns: int = 10 * S) -> None:
        for _ in range(rounds):
            self.wall += step_ns
            self.p._check_gaps(self.wall)
            for _ in range(5):
                await asyncio.sleep(0.01)
            self.p._advance("AAA", None, self.wall)


@pytest.mark.parametrize("batched", [False, True])
def test_a_first_trade_a_year_ahead_is_a_bad_timestamp_not_the_clock(batched: bool) -> None:
    async def go() -> _Clocked:
        c = _Clocked(RealtimeConfig(timeframes=["1s"], lateness_ms=250, start_timeout_secs=0))
        await c.build()
        frames = [_trade(T0 // MS + 365 * 86_400_000, 100.0, 1)]
        frames += [_trade(T0 // MS + (k + 1) * 100, 101.0, k + 2) for k in range(50)]
        if batched:
            c.feed.in_batch = True
            await c.p._on_frames(c.feed, frames, T0)
            c.feed.in_batch = False
        else:
            for k, raw in enumerate(frames):
                c.wall = T0 + k * 100 * MS
                await c.p._on_frame(c.feed, raw, c.wall)
        return c

    c = asyncio.run(go())
    # It seeded the offset estimate and moved the bars' frontier a year ahead: the 50 real ones were all late.
    assert c.p.dead_letters.by_reason() == {"bad_timestamp": 1}
    assert c.p.ticks_accepted == 50


@pytest.mark.parametrize(("outage_secs", "timeframes"), [(40, ["1s"]), (5, ["1s", "1m"])])
def test_outages_longer_than_the_backfill_timeout_are_backfilled(outage_secs: int, timeframes: list[str]) -> None:
    class History:
        name = "fake"

        def __init__(self) -> None:
            self.calls = 0

        def fetch(self, symbol: str, start: Any, end: Any, timeframe: Any) -> pl.DataFrame:
            self.calls += 1
            w = timeframe.seconds * S
            ts = list(range(int(start.timestamp()) * S, int(end.timestamp()) * S, w))
            one = [1.0] * len(ts)
            return pl.DataFrame({"ts": pl.Series(ts, dtype=pl.Datetime("ns", "UTC")), "open": one, "high": one,
                                 "low": one, "close": one, "volume": [5.0] * len(ts)})  # fmt: skip

    history = History()

    async def go() -> _Clocked:
        c = _Clocked(RealtimeConfig(timeframes=timeframes, lateness_ms=250, start_timeout_secs=0), history)
        await c.build()
        for k in range(20):
            await c.trade(T0 + k * 100 * MS)
        await c.outage(T0 + 2 * S, T0 + (2 + outage_secs) * S)
        for k in range(450):  # 45 s of trades after the outage (a 1m window closes), the ticker every 100 ms
            await c.trade(T0 + (2 + outage_secs) * S + k * 100 * MS)
            c.p._check_gaps(c.wall)
            await asyncio.sleep(0)
        await c.settle(rounds=3, step_ns=S)
        return c

    c = asyncio.run(go())
    # The timeout ran from when the gap opened: past 30 s (or a 1m window closing later), never asked.
    assert history.calls == len(timeframes)
    assert not [b for b in c.bars if b.final and b.gap]
    assert sum(a.counters.backfilled for a in c.p.aggregators) > 0


def test_the_window_where_trades_resume_after_an_unfilled_outage_says_gap() -> None:
    async def go() -> _Clocked:
        c = _Clocked(RealtimeConfig(timeframes=["1s"], lateness_ms=0, start_timeout_secs=0, backfill="none"))
        await c.build()
        for k in range(10):
            await c.trade(T0 + k * 100 * MS)
        await c.outage(T0 + S, T0 + 5500 * MS)
        for k in range(30):  # trades resume 0.5 s into the window at T0 + 5 s
            await c.trade(T0 + 5500 * MS + k * 100 * MS)
        await c.settle()
        return c

    c = asyncio.run(go())
    resumed = [b for b in c.bars if b.ts_ns == T0 + 5 * S]
    assert resumed
    assert all(b.gap for b in resumed)  # the outage covered its first half second: it said gap=False
    assert not any(b.gap for b in c.bars if b.ts_ns >= T0 + 6 * S)
    assert all(a._gaps.get("AAA", []) == [] for a in c.p.aggregators)  # a failed gap is not kept for good


def test_backfill_neither_re_emits_a_final_bar_nor_makes_a_flat_one() -> None:
    agg = BarAggregator("1s", lateness_ns=0)
    agg.add("X", [0, S // 2], [10.0, 11.0], [1.0, 2.0])
    first = agg.advance("X", 3 * S, 0)  # window 0 final by the clock while the symbol is quiet
    assert [(b.ts_ns, b.status) for b in first] == [(0, "final")]
    gap = agg.open_gap("X", S // 2)  # the feed drops later: the gap starts at the last trade, in window 0
    agg.add("X", [5 * S + 10], [12.0], [1.0])
    agg.close_gap(gap, 5 * S + 10)
    agg.advance("X", 8 * S, 0)
    history = [(0, 10.0, 11.0, 10.0, 11.0, 3.0), (S, 11.0, 11.0, 11.0, 11.0, 0.0), (5 * S, 12.0, 12.0, 12.0, 12.0, 1.0)]
    assert agg.resolve_gap(gap, history) == 1
    after = agg.advance("X", 8 * S, 0)
    assert [(b.ts_ns, b.status, b.backfilled) for b in after] == [(5 * S, "final", True)]


def test_vwap_stays_within_low_and_high() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        agg = BarAggregator("1s")
        price = round(rng.uniform(0.01, 50_000), rng.choice([2, 4, 8]))
        n = rng.choice([2, 3, 5, 9, 20])
        sizes = [round(rng.uniform(0.0001, 10), rng.choice([3, 5, 8])) for _ in range(n)]
        agg.add("X", list(range(n)), [price] * n, sizes)
        (bar,) = agg.advance("X", 2 * S, 0)
        assert bar.low <= bar.vwap <= bar.high, (price, sizes, bar.vwap)
        assert [b.vwap for b in agg.open_windows("X")] == []


def test_weekly_live_bars_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="Thursdays"):
        RealtimeConfig(timeframes=["1s", "1w"])


def test_corrected_bars_flag_the_outage_in_their_own_time() -> None:
    """`bar_time: corrected` puts bars on our clock (exchange time + offset). An outage's gap runs from the last
    trade counted to the first one after, and must be placed on the same clock: on a source 3 s behind ours, it was
    placed 3 s early, flagging windows that missed nothing and leaving the ones that did."""

    async def go() -> _Clocked:
        c = _Clocked(RealtimeConfig(timeframes=["1s"], lateness_ms=0, start_timeout_secs=0, backfill="none",
                                    bar_time="corrected"))  # fmt: skip
        await c.build()
        behind = 3 * S  # the exchange's clock: received 3 s after its stamps (plus 2 ms on the wire)

        async def trade(t_ns: int) -> None:
            c.wall = t_ns + behind + 2 * MS
            c.tid += 1
            await c.p._on_frame(c.feed, _trade(t_ns // MS, 100.0, c.tid), c.wall)

        for k in range(50):
            await trade(T0 + k * 10 * MS)  # 0.00-0.49 s exchange time
        await c.outage(T0 + behind + 500 * MS, T0 + behind + 1200 * MS)
        await trade(T0 + 1210 * MS)
        return c

    c = asyncio.run(go())
    gap = c.p.aggregators[0]._gaps["AAA"][0]
    offset = c.feed.estimator.offset_ns
    assert offset == 3 * S + 2 * MS
    assert (gap.start_ns, gap.end_ns) == (T0 + 490 * MS + offset, T0 + 1210 * MS + offset)
