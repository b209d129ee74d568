from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.core.errors import SchemaError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars, conform
from tests.conftest import make_bars


def test_check_bars_valid_frame_passes_unchanged():
    bars = make_bars(5)
    assert check_bars(bars, name="t").equals(bars)


def test_conform_missing_and_extra_columns_named():
    bars = make_bars(3).drop("volume").with_columns(vol=pl.lit(1.0))
    with pytest.raises(SchemaError, match=r"t: missing columns \['volume'\]; unexpected columns \['vol'\]"):
        conform(bars, BAR_SCHEMA, name="t")


def test_conform_casts_ints_and_naive_time_to_utc():
    bars = make_bars(3).with_columns(pl.col("volume").cast(pl.Int64), pl.col("ts").dt.replace_time_zone(None))
    out = conform(bars, BAR_SCHEMA, name="t")
    assert out.schema == pl.Schema(BAR_SCHEMA)


def test_conform_string_price_refused_with_column_named():
    bars = make_bars(3).with_columns(pl.col("close").cast(pl.String))
    with pytest.raises(SchemaError, match="column 'close' has type String"):
        conform(bars, BAR_SCHEMA, name="t")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None])
def test_check_bars_non_finite_price_refused_with_timestamp(value):
    bars = (
        make_bars(5)
        .with_row_index()
        .with_columns(close=pl.when(pl.col("index") == 3).then(value).otherwise(pl.col("close")))
        .drop("index")
    )
    with pytest.raises(SchemaError, match=r"column 'close' has 1 null/NaN/inf value\(s\), first at ts=2024-01-04"):
        check_bars(bars, name="t")


def test_check_bars_duplicate_timestamp_refused():
    bars = make_bars(4)
    dup = pl.concat([bars.head(2), bars.slice(1, 3)])
    with pytest.raises(SchemaError, match="1 duplicate timestamp"):
        check_bars(dup, name="t")


def test_check_bars_unsorted_refused():
    bars = make_bars(4)
    with pytest.raises(SchemaError, match="unsorted timestamp"):
        check_bars(bars.reverse(), name="t")


def test_check_bars_order_checked_per_symbol():
    two = pl.concat([make_bars(3, symbol="A"), make_bars(3, symbol="B")])
    assert check_bars(two, name="t").height == 6


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=40),
    prices=st.data(),
)
def test_check_bars_increasing_finite_always_accepted_and_any_nan_refused(gaps, prices):
    n = len(gaps)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    ts, t = [], start
    for g in gaps:
        t += timedelta(seconds=g)
        ts.append(t)
    values = prices.draw(st.lists(st.floats(0.01, 1e6), min_size=n, max_size=n))
    frame = pl.DataFrame(
        {
            "ts": ts,
            "symbol": "X",
            "source": "h",
            "open": values,
            "high": values,
            "low": values,
            "close": values,
            "volume": values,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    assert check_bars(frame, name="h").height == n
    row = prices.draw(st.integers(0, n - 1))
    col = prices.draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
    broken = (
        frame.with_row_index()
        .with_columns(pl.when(pl.col("index") == row).then(float("nan")).otherwise(pl.col(col)).alias(col))
        .drop("index")
    )
    with pytest.raises(SchemaError, match=col):
        check_bars(broken, name="h")
