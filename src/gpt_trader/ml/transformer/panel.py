"""From feature frames to aligned numpy panels (time x asset x feature), and train-only normalization.

Accepted input (for `TransformerTrader.train/predict` and the evaluation): a polars or pandas frame, one or many
symbols, holding either feature rows (the output of `gpt_trader.data.features.build_features`) or raw bars
(`BAR_SCHEMA` columns: ts, symbol, open, high, low, close, volume; `source` optional), from which features are
built. Symbols are aligned on their common timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.core.frames import to_polars
from gpt_trader.core.schemas import BAR_SCHEMA
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import CALENDAR_COLUMNS, LABEL_COLUMNS, build_features, feature_columns

IGNORE_INDEX = -100  # cross-entropy ignores this class index (no label)
CLASS_NAMES: tuple[str, str, str] = ("Sell", "Hold", "Buy")  # class index = label + 1
# Feature columns that bias attention (volume and volatility); the first `rvol_*` column is the volatility.
VOLUME_FEATURE = "volume_z"


@dataclass(frozen=True, slots=True)
class Panel:
    """Rows are common timestamps; axis 1 is the asset in `symbols` order."""

    ts: npt.NDArray[Any]  # (N,) datetime64[us], UTC
    symbols: tuple[str, ...]
    features: npt.NDArray[np.float32]  # (N, A, F), not yet normalized
    calendar: npt.NDArray[np.float32]  # (N, 5)
    labels: npt.NDArray[np.int64]  # (N, A) class index, IGNORE_INDEX where unlabeled
    fwd_return: npt.NDArray[np.float64]  # (N, A) label's forward log return, NaN where unlabeled
    next_return: npt.NDArray[np.float64]  # (N, A) simple return of the next bar, NaN on the last bar

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def rows(self, start: int, stop: int) -> Panel:
        """The panel restricted to rows [start, stop)."""
        s = slice(start, stop)
        return Panel(
            self.ts[s],
            self.symbols,
            self.features[s],
            self.calendar[s],
            self.labels[s],
            self.fwd_return[s],
            self.next_return[s],
        )


def input_columns(config: FeaturesConfig) -> list[str]:
    """Feature columns fed to the input projection: every feature except the calendar (which is encoded)."""
    return [c for c in feature_columns(config) if c not in CALENDAR_COLUMNS]


def market_feature_indices(columns: list[str]) -> tuple[int, int]:
    """Indices of the volume and volatility columns among the input columns."""
    vol = next((i for i, c in enumerate(columns) if c.startswith("rvol_")), None)
    if VOLUME_FEATURE not in columns or vol is None:
        raise DataError(f"input columns need {VOLUME_FEATURE!r} and an 'rvol_*' column for the attention bias")
    return columns.index(VOLUME_FEATURE), vol


def ensure_features(data: Any, config: FeaturesConfig, *, name: str = "data") -> pl.DataFrame:
    """Feature rows for `data`: returned as is when it already has the feature columns, else built from bars."""
    frame = to_polars(data, name=name)
    if frame.height == 0:
        raise DataError(f"{name} is empty")
    features = feature_columns(config)
    if all(c in frame.columns for c in features):
        missing = [c for c in ("ts", "symbol") if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: feature frame lacks columns {missing}")
        if "label" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Int8).alias("label"))
        if "fwd_return" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("fwd_return"))
        return frame
    bar_cols = [c for c in BAR_SCHEMA if c != "source"]
    missing = [c for c in bar_cols if c not in frame.columns]
    if missing:
        absent = [c for c in features if c not in frame.columns]
        raise DataError(
            f"{name} is neither a feature frame (missing feature columns {absent}) nor a bar frame "
            f"(missing bar columns {missing})"
        )
    if "source" not in frame.columns:
        frame = frame.with_columns(pl.lit("user").alias("source"))
    from gpt_trader.core.schemas import conform

    bars = conform(frame.select(list(BAR_SCHEMA)), BAR_SCHEMA, name=name)
    built = build_features(bars, config)
    if built.height == 0:
        raise DataError(f"{name}: no rows left after the feature warm-up ({frame.height} bars given)")
    return built


def build_panel(
    frame: pl.DataFrame, columns: list[str], symbols: tuple[str, ...] | None = None, *, name: str = "data"
) -> Panel:
    """Align the symbols of a feature frame on their common timestamps and stack them into a `Panel`.

    `symbols` fixes the asset order (a trained model's); by default the sorted symbols of the frame.
    """
    missing = [c for c in ("ts", "symbol", "close", *columns, *CALENDAR_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing columns {missing}")
    present = tuple(sorted(frame["symbol"].unique().to_list()))
    symbols = symbols or present
    absent = [s for s in symbols if s not in present]
    if absent:
        raise DataError(f"{name}: has no rows for symbols {absent} (has {list(present)})")
    per_symbol = []
    for symbol in symbols:
        rows = frame.filter(pl.col("symbol") == symbol).sort("ts")
        if rows["ts"].is_duplicated().any():
            raise DataError(f"{name}: duplicate timestamps for symbol {symbol!r}")
        # The next bar's simple return is what a position decided at this bar earns.
        rows = rows.with_columns((pl.col("close").shift(-1) / pl.col("close") - 1).alias("_next_return"))
        per_symbol.append(rows)
    common = per_symbol[0].select("ts")
    for rows in per_symbol[1:]:
        common = common.join(rows.select("ts"), on="ts", how="inner")
    common = common.sort("ts")
    if common.height == 0:
        raise DataError(f"{name}: symbols {list(symbols)} share no timestamps")
    aligned = [common.join(rows, on="ts", how="left") for rows in per_symbol]
    features = np.stack([a.select(columns).to_numpy().astype(np.float32) for a in aligned], axis=1)
    bad = ~np.isfinite(features)
    if bad.any():
        cols = sorted({columns[j] for j in np.argwhere(bad)[:, 2]})
        raise DataError(f"{name}: non-finite values in feature columns {cols}; drop warm-up rows first")
    label = np.stack([a["label"].cast(pl.Float64).fill_null(np.nan).to_numpy() for a in aligned], axis=1)
    labels = np.where(np.isfinite(label), label + 1, IGNORE_INDEX).astype(np.int64)
    fwd = np.stack([a["fwd_return"].cast(pl.Float64).fill_null(np.nan).to_numpy() for a in aligned], axis=1)
    nxt = np.stack([a["_next_return"].fill_null(np.nan).to_numpy() for a in aligned], axis=1)
    calendar = aligned[0].select(CALENDAR_COLUMNS).to_numpy().astype(np.float32)
    ts = common["ts"].dt.replace_time_zone(None).to_numpy()
    return Panel(ts, tuple(symbols), features, calendar, labels, fwd.astype(np.float64), nxt.astype(np.float64))


@dataclass(frozen=True, slots=True)
class Normalizer:
    """Per-feature standardization and the forward-return scale, fitted on training rows only."""

    mean: npt.NDArray[np.float32]  # (F,)
    std: npt.NDArray[np.float32]  # (F,)
    target_mean: float
    target_std: float

    @classmethod
    def fit(cls, panel: Panel) -> Normalizer:
        """Fit on every (row, asset) of `panel` (pass the training panel only)."""
        flat = panel.features.reshape(-1, panel.features.shape[-1]).astype(np.float64)
        std = flat.std(axis=0)
        fwd = panel.fwd_return[np.isfinite(panel.fwd_return)]
        if fwd.size < 2:
            raise DataError(f"training data has {fwd.size} labelled rows; need labels to fit the return scale")
        # A constant feature (e.g. minute of day on daily bars) gets unit scale instead of a division by zero.
        return cls(
            mean=flat.mean(axis=0).astype(np.float32),
            std=np.where(std > 1e-12, std, 1.0).astype(np.float32),
            target_mean=float(fwd.mean()),
            target_std=float(fwd.std()) or 1.0,
        )

    def transform(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Standardize features of shape (..., F)."""
        return ((features - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, saved with the model."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Inverse of `to_dict`."""
        return cls(
            np.asarray(data["mean"], dtype=np.float32),
            np.asarray(data["std"], dtype=np.float32),
            float(data["target_mean"]),
            float(data["target_std"]),
        )


__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "LABEL_COLUMNS", "Normalizer", "Panel", "build_panel", "ensure_features"]
