from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import BAR_SCHEMA
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import CATALOG, BundledSource, package_version

EXPECTED = {
    "SPX": (5031, datetime(1999, 1, 4, tzinfo=UTC), datetime(2018, 12, 31, tzinfo=UTC)),
    "IXIC": (5031, datetime(1999, 1, 4, tzinfo=UTC), datetime(2018, 12, 31, tzinfo=UTC)),
    "GOOGL": (2335, datetime(2009, 5, 22, tzinfo=UTC), datetime(2018, 8, 29, tzinfo=UTC)),
    "EURUSD": (6225, datetime(2017, 1, 1, 22, tzinfo=UTC), datetime(2017, 12, 29, 21, tzinfo=UTC)),
}


@pytest.mark.parametrize("symbol", sorted(EXPECTED))
def test_bundled_fetch_full_series_matches_shipped_file(symbol):
    rows, first, last = EXPECTED[symbol]
    bars = BundledSource().fetch(symbol, None, None, Timeframe.parse(CATALOG[symbol].timeframe))
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    assert (bars.height, bars["ts"].min(), bars["ts"].max()) == (rows, first, last)
    assert bars["symbol"].unique().to_list() == [symbol]
    assert package_version(CATALOG[symbol]) != "not installed"


def test_bundled_fetch_first_spx_row_exact():
    row = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).row(0, named=True)
    assert row["open"] == pytest.approx(1229.22998)
    assert row["close"] == pytest.approx(1228.099976)
    assert row["volume"] == 877_000_000


def test_bundled_fetch_clips_half_open_range():
    start, end = datetime(2017, 3, 1, tzinfo=UTC), datetime(2017, 3, 2, tzinfo=UTC)
    bars = BundledSource().fetch("EURUSD", start, end, Timeframe.parse("1h"))
    assert bars["ts"].min() == start
    assert bars["ts"].max() < end
    assert bars.height == 24


def test_bundled_fetch_coarser_timeframe_resamples_consistently():
    hourly = BundledSource().fetch("EURUSD", None, None, Timeframe.parse("1h"))
    daily = BundledSource().fetch("EURUSD", None, None, Timeframe.parse("1d"))
    day = datetime(2017, 6, 14, tzinfo=UTC)
    one = hourly.filter(pl.col("ts").dt.date() == day.date())
    row = daily.filter(pl.col("ts") == day).row(0, named=True)
    assert row["open"] == one["open"][0]
    assert row["close"] == one["close"][-1]
    assert row["high"] == one["high"].max()
    assert row["low"] == one["low"].min()
    assert row["volume"] == pytest.approx(one["volume"].sum())
    assert daily["ts"].dt.weekday().max() <= 7
    assert daily.height < hourly.height


def test_bundled_fetch_unknown_symbol_lists_available():
    with pytest.raises(SourceError, match=r"no symbol 'AAPL'; available: \['EURUSD', 'GOOGL', 'IXIC', 'SPX'\]"):
        BundledSource().fetch("AAPL", None, None, Timeframe.parse("1d"))


def test_bundled_fetch_finer_timeframe_refused():
    with pytest.raises(SourceError, match="cannot serve 1h"):
        BundledSource().fetch("SPX", None, None, Timeframe.parse("1h"))
