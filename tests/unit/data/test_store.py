from __future__ import annotations

import polars as pl
import pytest

from gpt_trader.core.errors import SchemaError, StoreError
from gpt_trader.data.store import append_bars, last_timestamp, read_bars
from tests.conftest import make_bars


def test_append_bars_new_file_then_idempotent(tmp_path):
    path = tmp_path / "raw" / "x.parquet"
    bars = make_bars(10)
    first = append_bars(path, bars)
    assert (first.added, first.skipped, first.total) == (10, 0, 10)
    again = append_bars(path, bars)
    assert (again.added, again.skipped, again.total) == (0, 10, 10)
    assert read_bars(path).equals(bars)


def test_append_bars_only_newer_bars_added(tmp_path):
    path = tmp_path / "x.parquet"
    bars = make_bars(10)
    append_bars(path, bars.head(6))
    result = append_bars(path, bars.slice(4))  # overlaps two stored bars
    assert (result.added, result.skipped, result.total) == (4, 2, 10)
    assert read_bars(path).equals(bars)
    assert last_timestamp(path) == bars["ts"][-1]


def test_append_bars_stored_history_never_rewritten(tmp_path):
    path = tmp_path / "x.parquet"
    bars = make_bars(5)
    append_bars(path, bars)
    revised = bars.with_columns(pl.col("close") * 2)
    append_bars(path, revised)
    assert read_bars(path).equals(bars)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.with_columns(pl.lit(float("nan")).alias("close")), "null/NaN/inf"),
        (lambda b: b.reverse(), "unsorted"),
        (lambda b: pl.concat([b, b.tail(1)]), "duplicate"),
        (lambda b: b.drop("volume"), "missing columns"),
    ],
)
def test_append_bars_bad_batch_refused_and_file_untouched(tmp_path, mutate, message):
    path = tmp_path / "x.parquet"
    bars = make_bars(8)
    append_bars(path, bars.head(4))
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=message):
        append_bars(path, mutate(bars.slice(4)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]


def test_append_bars_corrupt_existing_file_refused_not_overwritten(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError, match=r"x\.parquet: cannot read parquet"):
        append_bars(path, make_bars(3))
    assert path.read_bytes() == b"PAR1 this is not parquet"


def test_read_bars_wrong_columns_named(tmp_path):
    path = tmp_path / "x.parquet"
    make_bars(3).rename({"close": "Close"}).write_parquet(path)
    with pytest.raises(StoreError, match=r"missing columns \['close'\]"):
        read_bars(path)


def test_read_bars_missing_file_says_what_to_run(tmp_path):
    with pytest.raises(StoreError, match="gpt-trader data capture"):
        read_bars(tmp_path / "nope.parquet")


def test_append_bars_mixing_symbols_refused(tmp_path):
    path = tmp_path / "x.parquet"
    append_bars(path, make_bars(3, symbol="A"))
    with pytest.raises(StoreError, match="mix symbols"):
        append_bars(path, make_bars(6, symbol="B").slice(3))
