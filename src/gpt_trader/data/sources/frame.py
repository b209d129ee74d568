"""Shared pieces of the REST adapters: UTC time conversion and building a `BAR_SCHEMA` frame from columns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from gpt_trader.core.schemas import BAR_SCHEMA, UTC_US
from gpt_trader.core.timeframe import Timeframe


def to_utc(when: datetime) -> datetime:
    """Timezone-aware UTC; a naive datetime is taken to be UTC already (the project's convention)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def to_epoch_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch (Binance and Polygon time parameters)."""
    return int(to_utc(when).timestamp() * 1000)


def format_rfc3339(when: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix, as Alpaca expects."""
    return to_utc(when).isoformat().replace("+00:00", "Z")


def empty_bars() -> pl.DataFrame:
    """A zero-row frame in `BAR_SCHEMA`."""
    return pl.DataFrame(schema=BAR_SCHEMA)


def build_bar_frame(
    ts: pl.Series,
    symbol: str,
    source: str,
    ohlcv: Sequence[Sequence[float]],
) -> pl.DataFrame:
    """Assemble `BAR_SCHEMA` columns; `ts` holds UTC datetimes and `ohlcv` five equal-length columns."""
    opens, highs, lows, closes, volumes = ohlcv
    return pl.DataFrame(
        {
            "ts": ts.cast(UTC_US),
            "symbol": pl.Series([symbol] * len(ts), dtype=pl.String),
            "source": pl.Series([source] * len(ts), dtype=pl.String),
            "open": pl.Series(opens, dtype=pl.Float64),
            "high": pl.Series(highs, dtype=pl.Float64),
            "low": pl.Series(lows, dtype=pl.Float64),
            "close": pl.Series(closes, dtype=pl.Float64),
            "volume": pl.Series(volumes, dtype=pl.Float64),
        }
    )


def stitch_pages(pages: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate pages, keep the first copy of any repeated timestamp, and sort by `ts`."""
    if not pages:
        return empty_bars()
    return pl.concat(pages, how="vertical").unique(subset=["symbol", "ts"], keep="first").sort("ts")


def drop_incomplete(df: pl.DataFrame, timeframe: Timeframe, now: datetime) -> pl.DataFrame:
    """Drop bars still forming at `now` (ts + timeframe > now): a partial bar would leak a moving value."""
    return df.filter(pl.col("ts") + pl.duration(seconds=timeframe.seconds) <= to_utc(now))
