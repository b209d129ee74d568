"""Accepting user data frames: polars (eager or lazy) or pandas, with time as a column or the index."""

from __future__ import annotations

from typing import Any

import polars as pl

from gpt_trader.core.errors import DataError

# Column names read as the time column (case-insensitive); `ts` is the canonical one.
TIME_COLUMNS = ("ts", "timestamp", "date", "datetime", "time")


def to_polars(data: Any, *, name: str = "data") -> pl.DataFrame:
    """A polars frame from polars or pandas input. A pandas frame without a time column gets its index as one:
    a DatetimeIndex as `ts`, an index named like a time column under its name."""
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    if isinstance(data, pl.DataFrame):
        return data
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        frame = data
        if not any(str(c).lower() in TIME_COLUMNS for c in frame.columns):
            if isinstance(frame.index, pd.DatetimeIndex):
                frame = frame.rename_axis("ts").reset_index()
            elif str(frame.index.name).lower() in TIME_COLUMNS:
                frame = frame.reset_index()
        return pl.from_pandas(frame)
    raise DataError(f"{name}: expected a polars or pandas DataFrame, got {type(data).__name__}")
