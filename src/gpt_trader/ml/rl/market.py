"""Market data for the environments: bars or features (polars or pandas) -> aligned numpy arrays.

The environments never touch a data frame: everything they read per step is precomputed here, so `step` is a
few float operations. Feature standardization is fitted on the training rows only (no look-ahead into the
held-out window) and applied to every row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.core.frames import TIME_COLUMNS, to_polars
from gpt_trader.core.schemas import BAR_SCHEMA
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features, feature_columns

FloatArray = npt.NDArray[np.float64]
# Standardized features beyond this many standard deviations are clipped: one crash day must not saturate a net.
FEATURE_CLIP = 10.0
_TIME_ALIASES = TIME_COLUMNS


@dataclass(frozen=True, slots=True)
class MarketArrays:
    """Time-aligned arrays for `symbols`: features (n, A, F) float32, close/volume/sigma (n, A) float64."""

    ts: npt.NDArray[np.datetime64]
    symbols: tuple[str, ...]
    feature_names: tuple[str, ...]
    features: npt.NDArray[np.float32]
    close: FloatArray
    volume: FloatArray
    sigma: FloatArray

    @property
    def n_rows(self) -> int:
        """Number of bars."""
        return int(self.close.shape[0])

    def asset(self, symbol: str) -> MarketArrays:
        """The single-asset view of `symbol`."""
        if symbol not in self.symbols:
            raise DataError(f"symbol {symbol!r} not in market data (have {list(self.symbols)})")
        i = self.symbols.index(symbol)
        return replace(
            self,
            symbols=(symbol,),
            features=self.features[:, i : i + 1],
            close=self.close[:, i : i + 1],
            volume=self.volume[:, i : i + 1],
            sigma=self.sigma[:, i : i + 1],
        )

    def standardized(self, fit_rows: range) -> MarketArrays:
        """Features z-scored with the mean/std of `fit_rows` only (constant columns become 0), clipped."""
        if len(fit_rows) < 2:
            raise DataError(f"need at least 2 rows to fit feature scaling, got {len(fit_rows)}")
        fit = self.features[fit_rows.start : fit_rows.stop].astype(np.float64)
        mean = fit.mean(axis=0)
        std = fit.std(axis=0)
        std[std < 1e-12] = 1.0
        scaled = np.clip((self.features - mean) / std, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
        return replace(self, features=scaled)


def normalize_bars(df: pl.DataFrame) -> pl.DataFrame:
    """Lower-case columns, name the time column `ts` (UTC) and fill `symbol`/`source` if absent."""
    df = df.rename({c: c.lower() for c in df.columns})
    if "ts" not in df.columns:
        alias = next((c for c in _TIME_ALIASES if c in df.columns), None)
        if alias is None:
            raise DataError(f"market data has no time column (looked for {list(_TIME_ALIASES)}; got {df.columns})")
        df = df.rename({alias: "ts"})
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
    if missing:
        raise DataError(f"market data lacks OHLCV columns {missing} (got {df.columns})")
    dtype = df.schema["ts"]
    if isinstance(dtype, pl.Datetime):
        ts = pl.col("ts").cast(pl.Datetime("us", dtype.time_zone or None))
        ts = ts.dt.convert_time_zone("UTC") if dtype.time_zone else ts.dt.replace_time_zone("UTC")
    elif dtype == pl.Date:
        ts = pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    else:
        ts = pl.col("ts").str.to_datetime().dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    extra = {}
    if "symbol" not in df.columns:
        extra["symbol"] = pl.lit("ASSET")
    if "source" not in df.columns:
        extra["source"] = pl.lit("user")
    return df.with_columns(ts.alias("ts"), **extra)


def to_features(data: Any, config: FeaturesConfig) -> pl.DataFrame:
    """A features frame: `data` itself if it already has every feature column, else features built from bars."""
    df = to_polars(data)
    names = feature_columns(config)
    if all(c in df.columns for c in names) and "ts" in df.columns and "symbol" in df.columns:
        return df.sort("symbol", "ts")
    bars = normalize_bars(df).select(list(BAR_SCHEMA)).cast(BAR_SCHEMA)  # type: ignore[arg-type]
    if bars.height == 0:
        raise DataError("market data is empty")
    return build_features(bars, config)


def market_arrays(
    features: pl.DataFrame,
    feature_names: list[str],
    *,
    symbols: list[str] | None = None,
    sigma_column: str = "rvol_20",
) -> MarketArrays:
    """Align `symbols` (default: all in the frame) on their common timestamps and extract the arrays."""
    missing = [c for c in (*feature_names, sigma_column, "close", "volume") if c not in features.columns]
    if missing:
        raise DataError(f"features frame lacks columns {missing}")
    have = sorted(features["symbol"].unique().to_list())
    chosen = symbols or have
    unknown = [s for s in chosen if s not in have]
    if unknown:
        raise DataError(f"symbols {unknown} not in market data (have {have})")
    frames = [features.filter(pl.col("symbol") == s).sort("ts") for s in chosen]
    common = frames[0].select("ts")
    for f in frames[1:]:
        common = common.join(f.select("ts"), on="ts", how="inner")
    common = common.sort("ts")
    if common.height < 3:
        raise DataError(f"symbols {chosen} share only {common.height} timestamps")
    aligned = [common.join(f, on="ts", how="left") for f in frames]
    feats = np.stack([f.select(feature_names).to_numpy().astype(np.float64) for f in aligned], axis=1)
    close = np.stack([f["close"].to_numpy().astype(np.float64) for f in aligned], axis=1)
    volume = np.stack([f["volume"].to_numpy().astype(np.float64) for f in aligned], axis=1)
    sigma = np.stack([f[sigma_column].to_numpy().astype(np.float64) for f in aligned], axis=1)
    for name, arr in (("features", feats), ("close", close), ("volume", volume), (sigma_column, sigma)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name} has non-finite values (drop warm-up rows / nulls before training)")
    if (close <= 0).any():
        raise DataError("close prices must be positive")
    return MarketArrays(
        ts=common["ts"].to_numpy(),
        symbols=tuple(chosen),
        feature_names=tuple(feature_names),
        features=feats.astype(np.float32),
        close=close,
        volume=np.maximum(volume, 0.0),
        sigma=np.maximum(sigma, 0.0),
    )
