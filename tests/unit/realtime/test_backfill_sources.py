"""Which history backfills a gap: each streaming source's own REST client by feed priority (keys from the same
environment the websocket adapters read, endpoints from `data.providers`), `history=` instead when given, nothing
with `backfill: none`; a source that fails hands over to the next one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from gpt_trader.core.errors import SourceError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import ProviderConfig
from gpt_trader.data.sources.alpaca import AlpacaSource
from gpt_trader.data.sources.binance import BinanceSource
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.data.sources.polygon import PolygonSource
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig, providers_from_environ
from gpt_trader.realtime.sources.history import provider_history
from tests.support.provider_server import (
    ALPACA_KEY_ID,
    ALPACA_SECRET_KEY,
    POLYGON_API_KEY,
    ProviderServer,
    series_from_frame,
)

ENV = {"APCA_API_KEY_ID": ALPACA_KEY_ID, "APCA_API_SECRET_KEY": ALPACA_SECRET_KEY, "POLYGON_API_KEY": POLYGON_API_KEY}
DAY = Timeframe.parse("1d")
_NS = 1_000_000_000


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def pipeline(configs: list[StreamConfig], environ: dict[str, str] = ENV, **kwargs: object) -> RealtimePipeline:
    config = kwargs.pop("config", None) or RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None)
    return RealtimePipeline(configs, config, bus=InProcessBus(), environ=environ, **kwargs)  # type: ignore[arg-type]


def test_provider_history_each_source_gets_its_own_client() -> None:
    providers = ProviderConfig(alpaca_url="http://127.0.0.1:1", polygon_url="http://127.0.0.1:2")
    alpaca = provider_history(DataSource.ALPACA, providers, ENV)
    polygon = provider_history(DataSource.POLYGON, providers, ENV)
    binance = provider_history(DataSource.BINANCE, providers, {})  # klines are public: no key needed
    assert isinstance(alpaca, AlpacaSource)
    assert alpaca.config.alpaca_url == "http://127.0.0.1:1"
    assert isinstance(polygon, PolygonSource)
    assert polygon.config.polygon_url == "http://127.0.0.1:2"
    assert isinstance(binance, BinanceSource)
    assert isinstance(provider_history(DataSource.REPLAY, providers, {}), BundledSource)
    assert provider_history(DataSource.REPLAY, providers, {}, replay_timestamps="now") is None  # restamped ticks
    assert provider_history(DataSource.IEX, providers, ENV) is None
    assert provider_history(DataSource.SIMULATED, providers, ENV) is None


def test_provider_history_missing_keys_name_the_variable() -> None:
    with pytest.raises(SourceError, match="APCA_API_SECRET_KEY"):
        provider_history(DataSource.ALPACA, ProviderConfig(), {"APCA_API_KEY_ID": "k"})
    with pytest.raises(SourceError, match="POLYGON_API_KEY"):
        provider_history(DataSource.POLYGON, ProviderConfig(), {})


def test_providers_from_environ_reads_the_settings_names() -> None:
    env = {
        "GPT_TRADER_DATA__PROVIDERS__ALPACA_URL": "http://127.0.0.1:9",
        "GPT_TRADER_DATA__PROVIDERS__ALPACA_FEED": "sip",
    }
    providers = providers_from_environ(env)
    assert providers.alpaca_url == "http://127.0.0.1:9"
    assert providers.alpaca_feed == "sip"
    assert providers.polygon_url == ProviderConfig().polygon_url
    assert providers_from_environ({}) == ProviderConfig()


def test_history_for_follows_feed_priority_per_symbol() -> None:
    async def scenario() -> None:
        p = pipeline(
            [
                StreamConfig(DataSource.POLYGON, ["SPY"], url="ws://127.0.0.1:1/stocks", priority=1),
                StreamConfig(DataSource.ALPACA, ["SPY", "AAPL"], url="ws://127.0.0.1:1/v2/iex", priority=0),
                StreamConfig(DataSource.BINANCE, ["BTCUSDT"], url="ws://127.0.0.1:1"),
                StreamConfig(DataSource.IEX, ["IBM"], url="ws://127.0.0.1:1/1.0/tops"),
            ],
            providers=ProviderConfig(alpaca_url="http://127.0.0.1:7"),
        )
        await p._build_feeds()
        spy = p._history_for("SPY")
        assert [type(s) for s in spy] == [AlpacaSource, PolygonSource]  # priority 0 first, then the backup
        assert spy[0].config.alpaca_url == "http://127.0.0.1:7"  # type: ignore[attr-defined]
        assert p._history_for("AAPL")[0] is spy[0]  # one client per source, shared by its symbols
        assert [type(s) for s in p._history_for("BTCUSDT")] == [BinanceSource]
        assert p._history_for("IBM") == []  # IEX has no history API

    asyncio.run(scenario())


def test_history_given_replaces_defaults_and_backfill_none_disables_them() -> None:
    async def scenario() -> None:
        streams = [StreamConfig(DataSource.ALPACA, ["SPX", "AAPL"], url="ws://127.0.0.1:1/v2/iex")]
        given = BundledSource()
        p = pipeline(streams, history=given)
        await p._build_feeds()
        assert p._history_for("SPX") == [given]
        mapped = pipeline(streams, history={"SPX": given})
        await mapped._build_feeds()
        assert mapped._history_for("SPX") == [given]
        assert mapped._history_for("AAPL") == []
        off = RealtimeConfig(timeframes=["1d"], max_future_secs=None, backfill="none")
        q = pipeline(streams, config=off)
        await q._build_feeds()
        assert q._history_for("SPX") == []

    asyncio.run(scenario())


def test_backfill_falls_back_to_the_next_source_when_the_first_fails(server: ProviderServer) -> None:
    """Alpaca refuses the keys (403); the Polygon backup's aggregates fill the gap."""
    frame = BundledSource().fetch("SPX", None, None, DAY)
    server.serve_bars("alpaca", "SPX", series_from_frame(frame))
    server.serve_bars("polygon", "SPX", series_from_frame(frame))
    start, end = datetime(2008, 10, 6, tzinfo=UTC), datetime(2008, 10, 17, tzinfo=UTC)

    async def scenario() -> list:
        p = pipeline(
            [
                StreamConfig(DataSource.ALPACA, ["SPX"], url="ws://127.0.0.1:1/v2/iex"),
                StreamConfig(DataSource.POLYGON, ["SPX"], url="ws://127.0.0.1:1/stocks"),
            ],
            environ={**ENV, "APCA_API_SECRET_KEY": "wrong"},
            providers=server.provider_config(max_retries=0),
        )
        await p._build_feeds()
        agg = p.aggregators[0]
        gap = agg.open_gap("SPX", int(start.timestamp() * _NS) + 1)
        agg.close_gap(gap, int(end.timestamp() * _NS) + 1)
        await p._backfill(agg, gap)
        return p.flush_bars()

    bars = asyncio.run(scenario())
    assert [r.provider for r in server.requests] == ["alpaca", "polygon"]
    assert server.requests[0].path == "/v2/stocks/SPX/bars"
    want = frame.filter((frame["ts"] >= start) & (frame["ts"] <= end))
    assert [b.ts for b in bars] == want["ts"].to_list()
    assert all(b.backfilled and not b.gap for b in bars)
    got = np.array([[b.open, b.high, b.low, b.close, b.volume] for b in bars])
    np.testing.assert_array_equal(got, want.select("open", "high", "low", "close", "volume").to_numpy())


def test_backfill_timeout_leaves_gap_flagged_and_abandons_the_fetch(server: ProviderServer) -> None:
    """A history request that stalls past `backfill_timeout_secs`: the gap's windows stay flagged and the fetch is
    left to a daemon thread, so it cannot hold up the process's exit."""
    server.serve_bars("alpaca", "SPX", series_from_frame(BundledSource().fetch("SPX", None, None, DAY)))
    server.delay(1, 5.0, provider="alpaca")
    start = datetime(2008, 10, 6, tzinfo=UTC)

    async def scenario() -> tuple[int, list[threading.Thread]]:
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, backfill_timeout_secs=0.3)
        p = pipeline(
            [StreamConfig(DataSource.ALPACA, ["SPX"], url="ws://127.0.0.1:1/v2/iex")],
            config=config,
            providers=server.provider_config(timeout_secs=30.0, max_retries=0),
        )
        await p._build_feeds()
        agg = p.aggregators[0]
        gap = agg.open_gap("SPX", int(start.timestamp() * _NS) + 1)
        agg.close_gap(gap, int(start.timestamp() * _NS) + 3 * 86_400 * _NS)
        await p._backfill(agg, gap)
        assert not gap.pending
        return agg.counters.backfilled, [t for t in threading.enumerate() if t.name == "backfill-fetch"]

    filled, fetching = asyncio.run(scenario())
    assert filled == 0
    assert fetching  # still waiting on the stalled server after the pipeline gave up on it
    assert all(t.daemon for t in fetching)
