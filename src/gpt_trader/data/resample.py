"""Aggregate bars to a coarser timeframe."""

from __future__ import annotations

import polars as pl

from gpt_trader.core.timeframe import Timeframe


def resample_bars(df: pl.DataFrame, timeframe: Timeframe) -> pl.DataFrame:
    """Aggregate `BAR_SCHEMA` bars into `timeframe` windows (left-closed, labelled by window start).

    Windows with no bars produce no row: an empty window is never invented as a flat bar.
    """
    every = str(timeframe)
    return (
        df.sort("symbol", "ts")
        .group_by_dynamic("ts", every=every, group_by=["symbol", "source"], closed="left", label="left")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select("ts", "symbol", "source", "open", "high", "low", "close", "volume")
        .sort("symbol", "ts")
    )
