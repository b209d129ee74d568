from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import polars as pl
import pytest

from gpt_trader.core.errors import DataError
from gpt_trader.core.frames import to_polars


def test_to_polars_takes_polars_eager_and_lazy_as_is():
    frame = pl.DataFrame({"ts": [datetime(2024, 1, 2, tzinfo=UTC)], "close": [1.0]})
    assert to_polars(frame) is frame
    assert to_polars(frame.lazy()).equals(frame)


def test_to_polars_pandas_time_index_becomes_a_column():
    index = pd.DatetimeIndex([datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)])
    assert to_polars(pd.DataFrame({"close": [1.0, 2.0]}, index=index)).columns == ["ts", "close"]
    named = pd.DataFrame({"close": [1.0]}, index=pd.Index(["2024-01-02"], name="Date"))
    assert to_polars(named).columns == ["Date", "close"]
    with_column = pd.DataFrame({"timestamp": [datetime(2024, 1, 2, tzinfo=UTC)], "close": [1.0]}, index=[7])
    assert to_polars(with_column).columns == ["timestamp", "close"]  # a time column wins over the index


def test_to_polars_refuses_other_inputs_with_the_name():
    with pytest.raises(DataError, match="live_data: expected a polars or pandas DataFrame, got list"):
        to_polars([1, 2], name="live_data")
