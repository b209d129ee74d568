from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from gpt_trader.core.errors import SchemaError
from gpt_trader.data.capture import capture_all, capture_dataset
from gpt_trader.data.config import DatasetSpec
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.data.store import read_bars


class RecordingSource:
    """The real bundled source, recording the ranges it was asked for."""

    name = "bundled"

    def __init__(self):
        self.inner = BundledSource()
        self.calls = []

    def fetch(self, symbol, start, end, timeframe):
        self.calls.append((start, end))
        return self.inner.fetch(symbol, start, end, timeframe)


def test_capture_dataset_incremental_fetches_only_after_last_bar(tmp_path):
    source = RecordingSource()
    early = DatasetSpec(source="bundled", symbol="GOOGL", end=date(2012, 1, 1))
    first = capture_dataset(early, source, tmp_path)
    full = DatasetSpec(source="bundled", symbol="GOOGL")
    second = capture_dataset(full, source, tmp_path)
    assert first.added > 0
    assert second.added > 0
    stored = read_bars(first.path)
    last_early = stored.filter(pl.col("ts") < pl.datetime(2012, 1, 1, time_zone="UTC"))["ts"].max()
    assert source.calls[1][0] > last_early  # asked only for bars after the stored ones
    assert stored.equals(BundledSource().fetch("GOOGL", None, None, _tf("1d")))


def test_capture_dataset_rerun_adds_nothing(tmp_path):
    spec = DatasetSpec(source="bundled", symbol="EURUSD", timeframe="1h")
    capture_dataset(spec, BundledSource(), tmp_path)
    before = (tmp_path / "raw" / "bundled" / "EURUSD_1h.parquet").read_bytes()
    again = capture_dataset(spec, BundledSource(), tmp_path)
    assert again.added == 0
    assert again.total == 6225
    assert (tmp_path / "raw" / "bundled" / "EURUSD_1h.parquet").read_bytes() == before


def test_capture_all_bad_source_batch_keeps_earlier_data(tmp_path):
    good = DatasetSpec(source="bundled", symbol="SPX", end=date(2000, 1, 1))
    capture_dataset(good, BundledSource(), tmp_path)
    before = (tmp_path / "raw" / "bundled" / "SPX_1d.parquet").read_bytes()

    class NaNSource(RecordingSource):
        def fetch(self, symbol, start, end, timeframe):
            return super().fetch(symbol, start, end, timeframe).with_columns(pl.lit(float("nan")).alias("high"))

    with pytest.raises(SchemaError, match="'high' has"):
        capture_all([DatasetSpec(source="bundled", symbol="SPX")], lambda s: NaNSource(), tmp_path)
    assert (tmp_path / "raw" / "bundled" / "SPX_1d.parquet").read_bytes() == before


def _tf(text):
    from gpt_trader.core.timeframe import Timeframe

    return Timeframe.parse(text)
