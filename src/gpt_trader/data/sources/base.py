"""The historical-source interface every provider implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import polars as pl

from gpt_trader.core.timeframe import Timeframe


class HistoricalSource(Protocol):
    """Fetches bars for one symbol; returns a frame in `BAR_SCHEMA`, sorted by `ts`, with start <= ts < end."""

    name: str

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return the bars of `symbol` in `[start, end)` (open-ended where None)."""
        ...


def clip_range(df: pl.DataFrame, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    """Keep bars with start <= ts < end."""
    if start is not None:
        df = df.filter(pl.col("ts") >= start)
    if end is not None:
        df = df.filter(pl.col("ts") < end)
    return df
