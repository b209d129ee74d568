"""Gap backfill through the live source's own history API: an Alpaca feed's local exchange is killed mid-stream and
the windows it missed are filled from Alpaca's bars endpoint, served on loopback in Alpaca's format with the true
bars; with `backfill: none` the same outage leaves them flagged and asks no one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bars import LiveBar
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from gpt_trader.realtime.replay import load_series
from tests.support.provider_server import ALPACA_KEY_ID, ALPACA_SECRET_KEY, ProviderServer, series_from_frame
from tests.support.waiting import wait_until

ENV = {"APCA_API_KEY_ID": ALPACA_KEY_ID, "APCA_API_SECRET_KEY": ALPACA_SECRET_KEY}
FAST = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "tick_interval_ms": 10.0, "start_timeout_secs": 5.0}


def rows(bars: list[LiveBar]) -> np.ndarray:
    return np.array([[b.ts_ns, b.open, b.high, b.low, b.close, b.volume] for b in bars])


def true_rows(first_ts_ns: int, n: int) -> np.ndarray:
    s = load_series("SPX")
    i = int(np.searchsorted(s.ts, first_ts_ns))
    sl = slice(i, i + n)
    return np.column_stack([s.ts[sl], s.open[sl], s.high[sl], s.low[sl], s.close[sl], s.volume[sl]])


async def stream_through_outage(config: RealtimeConfig, server: ProviderServer) -> list[LiveBar]:
    """Alpaca feed at a local exchange that is killed for ~0.5 s (~10 daily bars at 20 bars/s), then restarted."""
    epoch = time.time_ns() + 300_000_000  # the tape starts after the client is connected
    cfg = ExchangeConfig(feed="replay", rate=400, ticks_per_bar=20, timestamps="original", epoch_ns=epoch)
    ex = LocalExchange(cfg)
    port = await ex.start()
    p = RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, ["SPX"], url=ex.url("alpaca"))],
        config,
        bus=InProcessBus(),
        environ=ENV,
        providers=server.provider_config(page_limit=4),  # data.providers: the REST endpoints, here on loopback
    )
    try:
        await p.start()
        await asyncio.sleep(1.2)
        await ex.stop()
        await asyncio.sleep(0.5)
        ex = LocalExchange(replace(cfg, port=port))
        await ex.start()
        assert await wait_until(lambda: p.feeds[0].health.connected, 5)
        await asyncio.sleep(1.0)
        assert await wait_until(lambda: p.stats()["pending_gaps"] == 0, 8)
        await asyncio.sleep(0.1)
        return p.final_bars("SPX", "1d")
    finally:
        await p.close()
        await ex.stop()


@pytest.fixture
def alpaca_history():
    load_series("SPX")  # load the tape before the clock starts
    with ProviderServer() as server:
        server.serve_bars(
            "alpaca", "SPX", series_from_frame(BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")))
        )
        yield server


@pytest.mark.slow
def test_alpaca_gap_backfilled_from_alpaca_bars_endpoint(alpaca_history: ProviderServer) -> None:
    config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
    assert config.backfill == "provider"  # the default: no `history=` needed
    done = asyncio.run(stream_through_outage(config, alpaca_history))

    # every trading day from the first to the last final bar is there, equal to the true bar
    got = rows(done)
    want = true_rows(done[0].ts_ns, len(done))
    np.testing.assert_array_equal(got[:, 0].astype(np.int64), want[:, 0].astype(np.int64))
    np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-12)
    assert not any(b.gap for b in done)
    filled = [b for b in done if b.backfilled]
    assert len(filled) >= 8  # the ~10 days streamed while the exchange was down
    assert all(b.trades == -1 and b.source == "backfill" for b in filled)  # history bars, not streamed ones

    # ... and they came from Alpaca's bars endpoint, asked for the gap's range, paged by next_page_token
    asked = alpaca_history.requests_for("alpaca")
    assert asked
    assert {r.path for r in asked} == {"/v2/stocks/SPX/bars"}
    assert {r.param("timeframe") for r in asked} == {"1Day"}
    assert any(r.param("page_token") for r in asked)  # more than `page_limit` bars were missed
    assert all(r.headers.get("APCA-API-KEY-ID") == ALPACA_KEY_ID for r in asked)
    starts = [datetime.fromisoformat(r.param("start").replace("Z", "+00:00")) for r in asked]  # type: ignore[union-attr]
    ends = [datetime.fromisoformat(r.param("end").replace("Z", "+00:00")) for r in asked]  # type: ignore[union-attr]
    for bar in filled:
        assert min(starts) <= bar.ts < max(ends)


@pytest.mark.slow
def test_backfill_none_leaves_gap_flagged_and_asks_no_provider(alpaca_history: ProviderServer) -> None:
    config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, backfill="none", **FAST)
    done = asyncio.run(stream_through_outage(config, alpaca_history))
    assert alpaca_history.requests == []
    assert not any(b.backfilled for b in done)
    assert sum(b.gap for b in done) >= 1  # the windows the outage touched say so
