"""Binance: pure kline parsing on a recorded response, and startTime paging against the loopback server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import pytest
from pydantic import SecretStr

from gpt_trader.core.clock import SimClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.binance import BinanceSource, format_interval, format_symbol, parse_klines
from tests.support.provider_server import BINANCE_API_KEY, ProviderServer

KLINES = json.loads((Path(__file__).resolve().parents[3] / "fixtures/providers/binance/btcusdt_1h.json").read_text())
HOUR = Timeframe.parse("1h")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LATER = SimClock(datetime(2025, 1, 1, tzinfo=UTC))


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        assert urlsplit(running.url).hostname == "127.0.0.1"
        yield running


def make_source(server: ProviderServer, api_key: SecretStr | None = None, **overrides: object) -> BinanceSource:
    config = server.provider_config(**overrides)
    assert urlsplit(config.binance_url).hostname == "127.0.0.1"
    return BinanceSource(config, api_key, clock=LATER, sleep=lambda _: None)


@pytest.mark.parametrize(
    "text", ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w"]
)
def test_format_interval_documented_intervals_pass_through(text: str) -> None:
    assert format_interval(Timeframe.parse(text)) == text


@pytest.mark.parametrize("text", ["2m", "10m", "3h", "2d", "2w"])
def test_format_interval_unsupported_raises_naming_it(text: str) -> None:
    with pytest.raises(SourceError, match=f"binance does not serve {text} klines"):
        format_interval(Timeframe.parse(text))


def test_format_symbol_strips_separators() -> None:
    assert format_symbol("BTC/USDT") == format_symbol("btc-usdt") == format_symbol("BTCUSDT") == "BTCUSDT"


def test_parse_klines_recorded_response_exact_values() -> None:
    df = parse_klines(KLINES, "BTCUSDT")
    assert df.schema == pl.Schema(BAR_SCHEMA)
    assert df.height == 48
    assert df.row(0, named=True) == {
        "ts": T0,
        "symbol": "BTCUSDT",
        "source": "binance",
        "open": 42283.58,
        "high": 42581.13,
        "low": 42198.95,
        "close": 42417.81,
        "volume": 1702.24071,
    }
    assert df["ts"].to_list()[-1] == T0 + timedelta(hours=47)
    check_bars(df, name="klines")


def test_parse_klines_empty_list_gives_empty_frame() -> None:
    df = parse_klines([], "BTCUSDT")
    assert df.height == 0
    assert df.schema == pl.Schema(BAR_SCHEMA)


@pytest.mark.parametrize(
    "payload", [{"code": -1121}, [[1704067200000, "1"]], [[1704067200000, "x", "1", "1", "1", "1"]]]
)
def test_parse_klines_malformed_raises_source_error(payload: object) -> None:
    with pytest.raises(SourceError, match="binance: malformed klines"):
        parse_klines(payload, "BTCUSDT")


def test_fetch_pages_by_start_time_without_duplicates(server: ProviderServer) -> None:
    end = T0 + timedelta(days=2)
    df = make_source(server, page_limit=20).fetch("BTCUSDT", T0, end, HOUR)
    assert df.height == 48
    assert df["ts"].is_sorted()
    assert df["ts"].n_unique() == 48
    check_bars(df, name="fetched")
    requests = server.requests_for("binance")
    assert [r.param("startTime") for r in requests] == [
        str(KLINES[0][0]),
        str(KLINES[19][0] + 1),
        str(KLINES[39][0] + 1),
    ]
    assert {r.param("endTime") for r in requests} == {str(int(end.timestamp() * 1000) - 1)}
    assert {r.param("limit") for r in requests} == {"20"}
    assert {r.param("interval") for r in requests} == {"1h"}
    assert "X-MBX-APIKEY" not in requests[0].headers


def test_fetch_full_last_page_asks_once_more_then_stops(server: ProviderServer) -> None:
    df = make_source(server, page_limit=16).fetch("BTC/USDT", T0, T0 + timedelta(days=3), HOUR)
    assert df.height == 48
    assert df["symbol"].unique().to_list() == ["BTC/USDT"]
    assert len(server.requests) == 4  # three full pages, then an empty one
    assert server.requests[0].param("symbol") == "BTCUSDT"


def test_fetch_open_ended_range_starts_at_epoch(server: ProviderServer) -> None:
    df = make_source(server).fetch("BTCUSDT", None, None, HOUR)
    assert df.height == 48
    (request,) = server.requests
    assert request.param("startTime") == "0"
    assert request.param("endTime") is None
    assert request.param("limit") == "1000"


def test_fetch_clips_to_half_open_range(server: ProviderServer) -> None:
    df = make_source(server).fetch("BTCUSDT", T0 + timedelta(hours=5, minutes=30), T0 + timedelta(hours=10), HOUR)
    assert df["ts"].dt.hour().to_list() == [6, 7, 8, 9]


def test_fetch_drops_kline_still_open(server: ProviderServer) -> None:
    now = T0 + timedelta(hours=47, minutes=30)
    source = BinanceSource(server.provider_config(), clock=SimClock(now))
    df = source.fetch("BTCUSDT", None, None, HOUR)
    assert df.height == 47
    assert df["ts"].max() == T0 + timedelta(hours=46)


def test_fetch_sends_optional_key_header(server: ProviderServer) -> None:
    make_source(server, SecretStr(BINANCE_API_KEY)).fetch("BTCUSDT", None, None, HOUR)
    assert server.requests[0].headers["X-MBX-APIKEY"] == BINANCE_API_KEY


def test_fetch_bad_key_fails_at_once_without_leaking_it(
    server: ProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make_source(server, SecretStr("bad-binance-key-123"))
    with pytest.raises(SourceError) as info:
        source.fetch("BTCUSDT", None, None, HOUR)
    assert "HTTP 401" in str(info.value)
    assert "-2015" in str(info.value)
    assert "BINANCE_API_KEY" in str(info.value)
    for text in (str(info.value), caplog.text, repr(source)):
        assert "bad-binance-key-123" not in text
    assert len(server.requests) == 1


def test_fetch_invalid_symbol_fails_at_once(server: ProviderServer) -> None:
    with pytest.raises(SourceError, match=r"HTTP 400.*Invalid symbol"):
        make_source(server).fetch("NOPEUSDT", None, None, HOUR)
    assert len(server.requests) == 1


def test_fetch_429_honours_retry_after(server: ProviderServer) -> None:
    waits: list[float] = []
    server.fail(2, 429, retry_after=1)
    source = BinanceSource(server.provider_config(), clock=LATER, sleep=waits.append)
    assert source.fetch("BTCUSDT", None, None, HOUR).height == 48
    assert waits == [1.0, 1.0]
    assert len(server.requests) == 3


def test_fetch_418_ban_honours_short_retry_after_and_refuses_long(server: ProviderServer) -> None:
    waits: list[float] = []
    server.fail(1, 418, retry_after=2)
    source = BinanceSource(server.provider_config(max_retry_after_secs=60), clock=LATER, sleep=waits.append)
    assert source.fetch("BTCUSDT", None, None, HOUR).height == 48
    assert waits == [2.0]
    server.fail(1, 418, retry_after=259200)
    with pytest.raises(SourceError, match=r"HTTP 418.*259200s"):
        source.fetch("BTCUSDT", None, None, HOUR)
    assert waits == [2.0]


def test_fetch_retries_5xx_then_succeeds(server: ProviderServer) -> None:
    server.fail(3, 503)
    assert make_source(server, max_retries=3).fetch("BTCUSDT", None, None, HOUR).height == 48
    assert len(server.requests) == 4


def test_fetch_exhausted_retries_raise_source_error(server: ProviderServer) -> None:
    server.fail(100, 500)
    with pytest.raises(SourceError, match=r"binance: GET .*/api/v3/klines.*HTTP 500.*after 2 attempt"):
        make_source(server, max_retries=1).fetch("BTCUSDT", None, None, HOUR)
