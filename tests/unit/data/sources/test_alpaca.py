"""Alpaca: pure parsing of recorded pages, and fetch against the loopback server in Alpaca's wire format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.alpaca import AlpacaSource, format_timeframe, parse_bars, parse_crypto_bars
from gpt_trader.data.sources.credentials import AlpacaCredentials
from tests.support.provider_server import ALPACA_KEY_ID, ALPACA_SECRET_KEY, ProviderServer

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "providers" / "alpaca"
DAY = Timeframe.parse("1d")
LATER = SimClock(datetime(2025, 1, 1, tzinfo=UTC))


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        assert urlsplit(running.url).hostname == "127.0.0.1"
        yield running


def make_source(server: ProviderServer, **overrides: object) -> AlpacaSource:
    config = server.provider_config(**overrides)
    assert urlsplit(config.alpaca_url).hostname == "127.0.0.1"
    return AlpacaSource(config, server.alpaca_credentials(), clock=LATER, sleep=lambda _: None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", "1Min"),
        ("15m", "15Min"),
        ("59m", "59Min"),
        ("1h", "1Hour"),
        ("4h", "4Hour"),
        ("1d", "1Day"),
        ("1w", "1Week"),
    ],
)
def test_format_timeframe_supported_maps_to_alpaca_spelling(text: str, expected: str) -> None:
    assert format_timeframe(Timeframe.parse(text)) == expected


@pytest.mark.parametrize("text", ["1s", "60m", "24h", "2d", "2w"])
def test_format_timeframe_unsupported_raises_naming_it(text: str) -> None:
    with pytest.raises(SourceError, match=f"alpaca does not serve {text} bars"):
        format_timeframe(Timeframe.parse(text))


def test_parse_bars_recorded_page_exact_values() -> None:
    df = parse_bars(load("aapl_1day_page1.json"), "AAPL")
    assert df.schema == pl.Schema(BAR_SCHEMA)
    assert df.height == 4
    first = df.row(0, named=True)
    assert first == {
        "ts": datetime(2024, 1, 2, 5, 0, tzinfo=UTC),
        "symbol": "AAPL",
        "source": "alpaca",
        "open": 187.15,
        "high": 188.44,
        "low": 183.885,
        "close": 185.64,
        "volume": 82488674.0,
    }
    assert df["ts"].to_list()[-1] == datetime(2024, 1, 5, 5, 0, tzinfo=UTC)
    check_bars(df, name="page1")


def test_parse_bars_null_bars_gives_empty_frame() -> None:
    df = parse_bars(load("aapl_1day_empty.json"), "AAPL")
    assert df.height == 0
    assert df.schema == pl.Schema(BAR_SCHEMA)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"bars": "nope"},
        {"bars": [{"t": "2024-01-02T05:00:00Z", "o": 1, "h": 1, "l": 1, "c": 1}]},
        {"bars": [{"t": "yesterday", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}]},
    ],
)
def test_parse_bars_malformed_raises_source_error(payload: dict) -> None:
    with pytest.raises(SourceError, match="alpaca"):
        parse_bars(payload, "AAPL")


def test_parse_crypto_bars_recorded_page_keyed_by_symbol() -> None:
    df = parse_crypto_bars(load("btcusd_1hour.json"), "BTC/USD")
    assert df.height == 3
    assert df["symbol"].unique().to_list() == ["BTC/USD"]
    assert df.row(1, named=True)["ts"] == datetime(2024, 1, 2, 1, 0, tzinfo=UTC)
    assert df.row(1, named=True)["close"] == 45395.725
    assert df.row(1, named=True)["volume"] == 1.945620113
    assert parse_crypto_bars(load("btcusd_1hour.json"), "ETH/USD").height == 0


def test_fetch_stitches_pages_with_page_token(server: ProviderServer) -> None:
    df = make_source(server, page_limit=4).fetch("AAPL", None, None, DAY)
    assert df.height == 7
    assert df["ts"].is_sorted()
    assert df["ts"].n_unique() == 7
    assert df["ts"].to_list()[0] == datetime(2024, 1, 2, 5, tzinfo=UTC)
    assert df["close"].to_list()[-1] == 186.19
    check_bars(df, name="fetched")
    first, second = server.requests_for("alpaca")
    assert first.path == "/v2/stocks/AAPL/bars"
    assert first.query == {"timeframe": "1Day", "limit": "4", "sort": "asc", "feed": "iex", "adjustment": "raw"}
    assert second.param("page_token") == load("aapl_1day_page1.json")["next_page_token"]
    assert first.headers["APCA-API-KEY-ID"] == ALPACA_KEY_ID
    assert first.headers["APCA-API-SECRET-KEY"] == ALPACA_SECRET_KEY


def test_fetch_clips_to_half_open_range_and_sends_rfc3339(server: ProviderServer) -> None:
    start, end = datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 9, 5, tzinfo=UTC)
    df = make_source(server).fetch("AAPL", start, end, DAY)
    assert df["ts"].dt.day().to_list() == [3, 4, 5, 8]  # 01-09 05:00 == end is excluded
    request = server.requests_for("alpaca")[0]
    assert request.param("start") == "2024-01-03T00:00:00Z"
    assert request.param("end") == "2024-01-09T05:00:00Z"
    assert request.param("limit") == "1000"


def test_fetch_naive_datetimes_are_taken_as_utc(server: ProviderServer) -> None:
    df = make_source(server).fetch("AAPL", datetime(2024, 1, 8), None, DAY)  # noqa: DTZ001
    assert df.height == 3
    assert server.requests_for("alpaca")[0].param("start") == "2024-01-08T00:00:00Z"


def test_fetch_drops_bar_still_forming(server: ProviderServer) -> None:
    source = AlpacaSource(
        server.provider_config(), server.alpaca_credentials(), clock=SimClock(datetime(2024, 1, 10, 20, tzinfo=UTC))
    )
    df = source.fetch("AAPL", None, None, DAY)
    assert df["ts"].to_list()[-1] == datetime(2024, 1, 9, 5, tzinfo=UTC)


def test_fetch_crypto_symbol_uses_v1beta3_endpoint(server: ProviderServer) -> None:
    df = make_source(server).fetch("BTC/USD", None, None, Timeframe.parse("1h"))
    assert df.height == 3
    (request,) = server.requests_for("alpaca")
    assert request.path == "/v1beta3/crypto/us/bars"
    assert request.param("symbols") == "BTC/USD"
    assert request.param("timeframe") == "1Hour"
    assert request.param("feed") is None


def test_fetch_unsupported_timeframe_raises_before_any_request(server: ProviderServer) -> None:
    with pytest.raises(SourceError, match="1s"):
        make_source(server).fetch("AAPL", None, None, Timeframe.parse("1s"))
    assert server.requests == []


def test_fetch_retries_429_with_retry_after_then_succeeds(server: ProviderServer) -> None:
    waits: list[float] = []
    server.fail(1, 429, retry_after=3, provider="alpaca")
    source = AlpacaSource(server.provider_config(), server.alpaca_credentials(), clock=LATER, sleep=waits.append)
    df = source.fetch("AAPL", None, None, DAY)
    assert df.height == 7
    assert waits == [3.0]
    assert len(server.requests) == 3


def test_fetch_retries_5xx_then_succeeds(server: ProviderServer) -> None:
    server.fail(2, 500)
    assert make_source(server).fetch("AAPL", None, None, DAY).height == 7
    assert len(server.requests) == 4


def test_fetch_exhausted_retries_raise_source_error(server: ProviderServer) -> None:
    server.fail(100, 502)
    with pytest.raises(SourceError, match=r"alpaca: GET .*/v2/stocks/AAPL/bars.* HTTP 502 .*after 3 attempt"):
        make_source(server, max_retries=2).fetch("AAPL", None, None, DAY)
    assert len(server.requests) == 3


def test_fetch_wrong_credentials_fail_at_once_with_hint(
    server: ProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = AlpacaCredentials(key_id="PKWRONG", secret_key="wrong-secret-xyz")
    source = AlpacaSource(server.provider_config(), bad, clock=LATER)
    with pytest.raises(SourceError) as info:
        source.fetch("AAPL", None, None, DAY)
    message = str(info.value)
    assert "HTTP 403" in message
    assert "forbidden." in message
    assert "APCA_API_KEY_ID" in message
    assert "wrong-secret-xyz" not in message
    assert "wrong-secret-xyz" not in caplog.text
    assert "wrong-secret-xyz" not in repr(source)
    assert len(server.requests) == 1


def test_fetch_logs_and_repr_never_show_secret(server: ProviderServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail(1, 503)
    source = make_source(server)
    source.fetch("AAPL", None, None, DAY)
    assert caplog.text  # retries and httpx requests were logged
    for text in (caplog.text, repr(source), str(source)):
        assert ALPACA_SECRET_KEY not in text
        assert ALPACA_KEY_ID not in text
