"""Real market data that ships inside PyPI packages: no network, no keys.

| symbol | package | content |
|---|---|---|
| SPX | arch (NCSA) | S&P 500 index, daily OHLCV 1999-01-04..2018-12-31 |
| IXIC | arch (NCSA) | NASDAQ Composite, daily OHLCV 1999-01-04..2018-12-31 |
| GOOGL | gym-anytrading (MIT) | Alphabet class A, daily OHLCV 2009-05-22..2018-08-29 |
| EURUSD | gym-anytrading (MIT) | EUR/USD ask, hourly OHLCV 2017 (UTC) |
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.metadata import PackageNotFoundError, version

import polars as pl

from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.resample import resample_bars
from gpt_trader.data.sources.base import clip_range


@dataclass(frozen=True, slots=True)
class BundledDataset:
    """Where one bundled series lives and how its file is laid out."""

    symbol: str
    package: str
    resource: str
    timeframe: str
    time_column: str
    time_format: str
    licence: str
    description: str


CATALOG: dict[str, BundledDataset] = {
    d.symbol: d
    for d in (
        BundledDataset(
            "SPX", "arch", "data/sp500/sp500.csv.gz", "1d", "Date", "%m/%d/%Y", "NCSA", "S&P 500 index, daily"
        ),
        BundledDataset(
            "IXIC",
            "arch",
            "data/nasdaq/nasdaq.csv.gz",
            "1d",
            "Date",
            "%m/%d/%Y",
            "NCSA",
            "NASDAQ Composite index, daily",
        ),
        BundledDataset(
            "GOOGL",
            "gym_anytrading",
            "datasets/data/STOCKS_GOOGL.csv",
            "1d",
            "Date",
            "%Y-%m-%d",
            "MIT",
            "Alphabet class A, daily",
        ),
        BundledDataset(
            "EURUSD",
            "gym_anytrading",
            "datasets/data/FOREX_EURUSD_1H_ASK.csv",
            "1h",
            "Time",
            "%d.%m.%Y %H:%M:%S%.3f",
            "MIT",
            "EUR/USD ask, hourly, UTC",
        ),
    )
}


class BundledSource:
    """Reads the catalog's files with importlib.resources; coarser timeframes are resampled."""

    name = "bundled"

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return bundled bars for `symbol` in `[start, end)` at `timeframe`."""
        dataset = CATALOG.get(symbol)
        if dataset is None:
            raise SourceError(f"bundled source has no symbol {symbol!r}; available: {sorted(CATALOG)}")
        native = Timeframe.parse(dataset.timeframe)
        if timeframe.seconds < native.seconds or timeframe.seconds % native.seconds:
            raise SourceError(
                f"bundled {symbol} is {native} data; cannot serve {timeframe} (only multiples of {native})"
            )
        bars = clip_range(read_dataset(dataset), start, end)
        if timeframe != native:
            bars = resample_bars(bars, timeframe)
        return bars


def read_dataset(dataset: BundledDataset) -> pl.DataFrame:
    """Parse one bundled file into `BAR_SCHEMA` (timestamps are UTC; daily bars stamped at midnight)."""
    raw = resources.files(dataset.package).joinpath(dataset.resource).read_bytes()
    if dataset.resource.endswith(".gz"):
        import gzip

        raw = gzip.decompress(raw)
    frame = pl.read_csv(io.BytesIO(raw), infer_schema_length=0)
    bars = frame.select(
        pl.col(dataset.time_column)
        .str.strptime(pl.Datetime("us"), dataset.time_format)
        .dt.replace_time_zone("UTC")
        .alias("ts"),
        pl.lit(dataset.symbol).alias("symbol"),
        pl.lit("bundled").alias("source"),
        *(pl.col(c.capitalize()).cast(pl.Float64).alias(c) for c in ("open", "high", "low", "close", "volume")),
    ).sort("ts")
    return check_bars(bars, name=f"bundled {dataset.symbol} ({dataset.package}/{dataset.resource})")


def package_version(dataset: BundledDataset) -> str:
    """Installed version of the package a dataset ships in, for the data card."""
    dist = {"gym_anytrading": "gym-anytrading"}.get(dataset.package, dataset.package)
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
