"""Polygon: pure aggregates parsing on recorded pages, and next_url paging against the loopback server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import pytest
from pydantic import SecretStr

from gpt_trader.core.clock import SimClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.polygon import PolygonSource, format_timespan, parse_aggregates
from tests.support.provider_server import POLYGON_API_KEY, ProviderServer

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "providers" / "polygon"
DAY = Timeframe.parse("1d")
LATER = SimClock(datetime(2025, 1, 1, tzinfo=UTC))


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        assert urlsplit(running.url).hostname == "127.0.0.1"
        yield running


def make_source(server: ProviderServer, key: str = POLYGON_API_KEY, **overrides: object) -> PolygonSource:
    config = server.provider_config(**overrides)
    assert urlsplit(config.polygon_url).hostname in ("127.0.0.1", "localhost")
    return PolygonSource(config, SecretStr(key), clock=LATER, sleep=lambda _: None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1s", (1, "second")), ("15m", (15, "minute")), ("4h", (4, "hour")), ("1d", (1, "day")), ("2w", (2, "week"))],
)
def test_format_timespan_maps_units(text: str, expected: tuple[int, str]) -> None:
    assert format_timespan(Timeframe.parse(text)) == expected


def test_parse_aggregates_recorded_page_exact_values() -> None:
    df = parse_aggregates(load("aapl_1day_page1.json"), "AAPL")
    assert df.schema == pl.Schema(BAR_SCHEMA)
    assert df.height == 4
    assert df.row(0, named=True) == {
        "ts": datetime(2024, 1, 2, 5, 0, tzinfo=UTC),
        "symbol": "AAPL",
        "source": "polygon",
        "open": 187.15,
        "high": 188.44,
        "low": 183.885,
        "close": 185.64,
        "volume": 82488674.0,
    }
    check_bars(df, name="page1")


def test_parse_aggregates_delayed_status_is_fine() -> None:
    df = parse_aggregates(load("aapl_1day_page2.json"), "AAPL")
    assert df["ts"].dt.day().to_list() == [8, 9, 10]


def test_parse_aggregates_missing_results_gives_empty_frame() -> None:
    df = parse_aggregates(load("aapl_1day_empty.json"), "AAPL")
    assert df.height == 0
    assert df.schema == pl.Schema(BAR_SCHEMA)


def test_parse_aggregates_error_status_raises_with_detail() -> None:
    with pytest.raises(SourceError, match=r"status 'ERROR': Unknown API Key"):
        parse_aggregates(load("error_unknown_key.json"), "AAPL")


def test_parse_aggregates_malformed_result_raises() -> None:
    with pytest.raises(SourceError, match="malformed aggregate"):
        parse_aggregates({"status": "OK", "results": [{"t": 1, "o": 1.0}]}, "AAPL")


def test_fetch_follows_next_url_and_stitches_pages(server: ProviderServer) -> None:
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 11, tzinfo=UTC)
    df = make_source(server).fetch("AAPL", start, end, DAY)
    assert df.height == 7
    assert df["ts"].is_sorted()
    assert df["ts"].n_unique() == 7
    assert df["close"].to_list() == [185.64, 184.25, 181.91, 181.18, 185.56, 185.14, 186.19]
    check_bars(df, name="fetched")
    first, second = server.requests_for("polygon")
    assert first.path == "/v2/aggs/ticker/AAPL/range/1/day/1704067200000/1704931199999"
    assert first.query == {"adjusted": "true", "sort": "asc", "limit": "50000"}
    assert second.param("cursor") is not None
    for request in (first, second):
        assert request.headers["Authorization"] == f"Bearer {POLYGON_API_KEY}"
        assert "apiKey" not in request.query  # the key never sits in a URL


def test_fetch_clips_to_half_open_range(server: ProviderServer) -> None:
    df = make_source(server).fetch("AAPL", datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 9, 5, tzinfo=UTC), DAY)
    assert df["ts"].dt.day().to_list() == [4, 5, 8]


def test_fetch_unknown_ticker_gives_empty_frame(server: ProviderServer) -> None:
    df = make_source(server).fetch("ZZZZ", None, None, DAY)
    assert df.height == 0
    assert df.schema == pl.Schema(BAR_SCHEMA)


def test_fetch_refuses_next_url_on_another_host(server: ProviderServer) -> None:
    # The server rewrites next_url to 127.0.0.1; configured as localhost, that is another origin.
    source = make_source(server, polygon_url=server.url.replace("127.0.0.1", "localhost"))
    with pytest.raises(SourceError, match="refused to send the key there"):
        source.fetch("AAPL", None, None, DAY)
    assert len(server.requests) == 1


@pytest.mark.parametrize(("key", "detail"), [("wrong-poly-key-42", "Unknown API Key")])
def test_fetch_bad_key_fails_at_once_with_hint(
    server: ProviderServer, caplog: pytest.LogCaptureFixture, key: str, detail: str
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make_source(server, key)
    with pytest.raises(SourceError) as info:
        source.fetch("AAPL", None, None, DAY)
    message = str(info.value)
    assert "HTTP 401" in message
    assert detail in message
    assert "POLYGON_API_KEY" in message
    for text in (message, caplog.text, repr(source)):
        assert key not in text
    assert len(server.requests) == 1


def test_fetch_429_honours_retry_after_then_succeeds(server: ProviderServer) -> None:
    waits: list[float] = []
    server.fail(1, 429, retry_after=12, provider="polygon")
    source = PolygonSource(server.provider_config(), SecretStr(POLYGON_API_KEY), clock=LATER, sleep=waits.append)
    assert source.fetch("AAPL", None, None, DAY).height == 7
    assert waits == [12.0]


def test_fetch_retries_5xx_mid_pagination(server: ProviderServer) -> None:
    server.fail(2, 500, after=1)  # page 1 succeeds, the next_url request fails twice
    df = make_source(server).fetch("AAPL", None, None, DAY)
    assert df.height == 7
    requests = server.requests
    assert len(requests) == 4
    assert [r.param("cursor") is not None for r in requests] == [False, True, True, True]


def test_fetch_exhausted_retries_raise_source_error(server: ProviderServer) -> None:
    server.fail(100, 503)
    with pytest.raises(SourceError, match=r"polygon: GET .*/v2/aggs/ticker/AAPL/.*HTTP 503.*after 4 attempt"):
        make_source(server, max_retries=3).fetch("AAPL", None, None, DAY)


def test_fetch_logs_never_show_key(server: ProviderServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail(1, 502)
    source = make_source(server)
    source.fetch("AAPL", None, None, DAY)
    assert "GET" in caplog.text
    assert POLYGON_API_KEY not in caplog.text
    assert POLYGON_API_KEY not in repr(source)
