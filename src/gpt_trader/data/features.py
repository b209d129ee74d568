"""The feature pipeline (polars, lazy): backward-looking features and forward-looking labels per symbol.

Every window runs per symbol (`.over("symbol")` on a frame sorted by symbol, ts), so symbols never bleed into
each other, and every feature at row t uses only bars <= t (a test perturbs the future to prove it). Labels are
the only columns that look ahead.

Features (`feature_columns`):
- `ret_{h}`: log return over h bars, log(close_t / close_{t-h}), for h in `return_horizons`.
- `rvol_{w}`: realized volatility, sample std (ddof=1) of 1-bar log returns over w bars (per bar, not annualized).
- `rsi`: Wilder RSI in [0, 100], identical to `ta.momentum.RSIIndicator` (50 when the window has no movement).
- `macd`, `macd_signal`, `macd_hist`: `ta.trend.MACD` line, signal and histogram divided by close (scale-free).
- `bb_pos`: Bollinger position (close - mid) / (k * std), population std as in `ta`; 0 at the mid band,
  +1/-1 at the upper/lower band (equals 2 * %B - 1). `bb_width`: (upper - lower) / mid.
- `volume_z`: z-score of log1p(volume) against its trailing `volume_z_window` bars (current bar included;
  sample std). log1p keeps zero volume finite.
- Calendar (from the bar open time `ts`): `minute_of_day` (UTC), `day_of_week` (UTC, 0=Mon), and 0/1 session
  flags `is_us_session` (New York 09:30-16:00), `is_europe_session` (London 08:00-16:30), `is_asia_session`
  (Tokyo 09:00-15:00), local time with DST, weekdays only, a bar counting when it opens inside the session.
  Daily bars are stamped 00:00 UTC, so on daily data these intraday fields are constant (minute_of_day 0, the
  session flags those of 00:00 UTC, i.e. Tokyo 09:00 open) and carry no information; only day_of_week varies.

A window whose values are all equal has zero std: `bb_pos` and `volume_z` are then 0 (the value equals the
mean; a null would drop every row of a feed whose volume is constant), never NaN or inf.

Labels (`LABEL_COLUMNS`): `fwd_return` = log(close_{t+H} / close_t) with H = `label_horizon`, and `label` in
{-1, 0, +1} (Sell/Hold/Buy): 0 when |fwd_return| < `label_neutral_sigma` * sigma_t, where sigma_t is the
trailing std of 1-bar log returns over `label_sigma_window` bars (bars <= t only) times sqrt(H). The last H rows
of each symbol have null labels: training must drop them (`df.drop_nulls(LABEL_COLUMNS)`).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from gpt_trader.core.schemas import BAR_SCHEMA
from gpt_trader.data.config import DatasetSpec, FeaturesConfig
from gpt_trader.data.store import dataset_path, read_bars, write_frame
from gpt_trader.data.validation import require_validated

LABEL_COLUMNS: tuple[str, str] = ("fwd_return", "label")
CALENDAR_COLUMNS: tuple[str, ...] = (
    "minute_of_day",
    "day_of_week",
    "is_us_session",
    "is_europe_session",
    "is_asia_session",
)
# (time zone, open minute, close minute) in local time; a bar is in session when its open time is in [open, close).
SESSIONS: dict[str, tuple[str, int, int]] = {
    "is_us_session": ("America/New_York", 9 * 60 + 30, 16 * 60),
    "is_europe_session": ("Europe/London", 8 * 60, 16 * 60 + 30),
    "is_asia_session": ("Asia/Tokyo", 9 * 60, 15 * 60),
}
# Whole-column window functions run ~2x faster on the in-memory engine than on polars 2's default streaming
# engine, which has to split and re-join the frame around every `.over` (benchmarks/features.py).
COLLECT_ENGINE: Literal["in-memory"] = "in-memory"
# A std at or below this fraction of the window mean's magnitude is a flat window (float residue, not spread).
_FLAT_REL_TOL = 1e-10
_GROUP = "symbol"
_MINUTES_PER_DAY = 24 * 60
_MIN_EPOCH_US = -(2**63)


def feature_columns(config: FeaturesConfig) -> list[str]:
    """Names of the feature columns `feature_pipeline` adds, in output order (labels excluded)."""
    return [
        *(f"ret_{h}" for h in config.return_horizons),
        *(f"rvol_{w}" for w in config.volatility_windows),
        "rsi",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_pos",
        "bb_width",
        "volume_z",
        *CALENDAR_COLUMNS,
    ]


# --- raw indicators: group-agnostic expressions over one ordered series; wrap in `.over("symbol")` for many ---


def ema_expr(x: pl.Expr, span: int) -> pl.Expr:
    """EMA with alpha = 2 / (span + 1), adjust=False, null until `span` values: `ta.utils._ema`."""
    return x.ewm_mean(span=span, adjust=False, min_samples=span)


def rsi_averages(close: pl.Expr, window: int) -> tuple[pl.Expr, pl.Expr]:
    """Wilder's smoothed average gain and loss (alpha = 1/window, adjust=False) exactly as `ta` computes them.

    As in `ta`, the first bar's missing change counts as a zero move, so the first value is at row window-1.
    """
    diff = close.diff(1)
    up = diff.clip(lower_bound=0.0).fill_null(0.0)
    down = (-diff).clip(lower_bound=0.0).fill_null(0.0)
    alpha = 1.0 / window
    return (
        up.ewm_mean(alpha=alpha, adjust=False, min_samples=window),
        down.ewm_mean(alpha=alpha, adjust=False, min_samples=window),
    )


def rsi_from_averages(avg_up: pl.Expr, avg_down: pl.Expr) -> pl.Expr:
    """RSI in [0, 100] from the smoothed gain and loss; 50 when both are 0 (no movement) rather than 0/0."""
    total = avg_up + avg_down
    # 100 * up / (up + down) is ta's 100 - 100 / (1 + up / down) without the division by a zero `down`.
    return pl.when(total > 0).then(100.0 * avg_up / total).when(total == 0).then(50.0).otherwise(None)


def rsi_expr(close: pl.Expr, window: int) -> pl.Expr:
    """Wilder RSI in [0, 100] exactly as `ta.momentum.RSIIndicator` (fillna=False)."""
    return rsi_from_averages(*rsi_averages(close, window))


def macd_exprs(close: pl.Expr, fast: int, slow: int, signal: int) -> dict[str, pl.Expr]:
    """Raw (price-unit) MACD line, signal and histogram as `ta.trend.MACD`: keys `macd`, `macd_signal`, `macd_hist`."""
    line = ema_expr(close, fast) - ema_expr(close, slow)
    sig = ema_expr(line, signal)
    return {"macd": line, "macd_signal": sig, "macd_hist": line - sig}


def bollinger_exprs(close: pl.Expr, window: int, k: float) -> dict[str, pl.Expr]:
    """Bollinger bands as `ta.volatility.BollingerBands` (population std): keys `mid`, `std`, `upper`, `lower`."""
    mid = close.rolling_mean(window, min_samples=window)
    std = close.rolling_std(window, min_samples=window, ddof=0)
    return {"mid": mid, "std": std, "upper": mid + k * std, "lower": mid - k * std}


def deviation_ratio(deviation: pl.Expr, scale: pl.Expr, level: pl.Expr) -> pl.Expr:
    """`deviation / scale`, but 0 in a flat window (scale ~ 0 relative to `level`): the value is the mean there."""
    flat = scale <= _FLAT_REL_TOL * level.abs()
    return pl.when(flat).then(0.0).otherwise(deviation / scale)


@functools.cache
def _utc_offsets(tz: str) -> tuple[pl.Series, pl.Series]:
    """UTC-offset table of `tz` over 1970-2100: (epoch-us start of each offset period, offset in minutes).

    Polars converts time zones element by element (~40 ms per million per zone per field); a table lookup with
    `search_sorted` is ~8x faster and exact to the minute. Times outside the range take the nearest period.
    """
    start, end = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)

    def offsets(ts: pl.Series) -> pl.Series:
        local = ts.dt.convert_time_zone(tz)
        return (local.dt.base_utc_offset() + local.dt.dst_offset()).dt.total_minutes()

    days = pl.datetime_range(start, end, "1d", time_unit="us", time_zone="UTC", eager=True)
    day_offsets = offsets(days)
    initial = day_offsets[0]
    changed = (day_offsets != day_offsets.shift(1)).fill_null(False).arg_true().to_list()
    starts, values = [_MIN_EPOCH_US], [initial]
    if changed:
        # Refine each day on which the offset changed to the minute of the change.
        minutes = pl.concat(
            [
                pl.datetime_range(days[i - 1], days[i], "1m", time_unit="us", time_zone="UTC", eager=True)
                for i in changed
            ]
        )
        minute_offsets = offsets(minutes)
        first = minute_offsets != minute_offsets.shift(1, fill_value=initial)
        starts += minutes.filter(first).dt.epoch("us").to_list()
        values += minute_offsets.filter(first).to_list()
    return pl.Series("start_us", starts, dtype=pl.Int64), pl.Series("offset_min", values, dtype=pl.Int64)


def local_minute_of_week(ts: pl.Expr, tz: str) -> pl.Expr:
    """Local wall-clock minute of the week in `tz` (0 = Monday 00:00), DST included."""
    starts, offsets = _utc_offsets(tz)
    period = pl.lit(starts).search_sorted(ts.dt.epoch("us"), side="right").cast(pl.Int64) - 1
    offset = pl.lit(offsets).gather(period)
    return _minute_of_week(ts.dt.epoch("us") // 60_000_000 + offset)


def _minute_of_week(epoch_minutes: pl.Expr) -> pl.Expr:
    # 1970-01-01 was a Thursday: shift by three days so that 0 is Monday 00:00.
    return (epoch_minutes + 3 * _MINUTES_PER_DAY) % (7 * _MINUTES_PER_DAY)


def session_expr(ts: pl.Expr, tz: str, open_minute: int, close_minute: int) -> pl.Expr:
    """1 when the bar opens on a local weekday within [open_minute, close_minute) local time in `tz`, else 0."""
    week_minute = local_minute_of_week(ts, tz)
    day_minute = week_minute % _MINUTES_PER_DAY
    in_session = (week_minute < 5 * _MINUTES_PER_DAY) & (day_minute >= open_minute) & (day_minute < close_minute)
    return in_session.cast(pl.Int8)


# --- the pipeline ---


def feature_pipeline(bars: pl.LazyFrame, config: FeaturesConfig) -> pl.LazyFrame:
    """Add feature and label columns to bars (`BAR_SCHEMA`, any number of symbols), sorted by symbol, ts.

    Warm-up rows keep null features; `build_features` drops them.
    """

    def per_symbol(expr: pl.Expr, name: str) -> pl.Expr:
        return expr.over(_GROUP).alias(name)

    # Only the window primitives run inside `.over` (each one is a group-and-scatter pass); the arithmetic
    # combining them runs on plain columns in later batches.
    close, volume = pl.col("close"), pl.col("volume")
    horizon = config.label_horizon
    lf = bars.sort(_GROUP, "ts").with_columns(
        # Non-positive prices would give -inf/NaN logs; validation refuses them, the guard keeps them null.
        _log_close=pl.when(close > 0).then(close.log()),
        _log_volume=pl.when(volume >= 0).then(volume.log1p()),
    )
    log_close, log_volume = pl.col("_log_close"), pl.col("_log_volume")
    avg_up, avg_down = rsi_averages(close, config.rsi_window)
    bands = bollinger_exprs(close, config.bollinger_window, config.bollinger_k)
    vz = config.volume_z_window
    lf = lf.with_columns(
        per_symbol(log_close.diff(1), "_ret_1"),
        *(per_symbol(log_close.diff(h), f"ret_{h}") for h in config.return_horizons if h != 1),
        per_symbol(avg_up, "_avg_up"),
        per_symbol(avg_down, "_avg_down"),
        per_symbol(ema_expr(close, config.macd_fast), "_ema_fast"),
        per_symbol(ema_expr(close, config.macd_slow), "_ema_slow"),
        per_symbol(bands["mid"], "_bb_mid"),
        per_symbol(bands["std"], "_bb_std"),
        per_symbol(log_volume.rolling_mean(vz, min_samples=vz), "_vol_mean"),
        per_symbol(log_volume.rolling_std(vz, min_samples=vz), "_vol_std"),
        per_symbol(log_close.shift(-horizon), "_log_close_ahead"),
    )
    ret_1 = pl.col("_ret_1")
    sigma_windows = sorted({*config.volatility_windows, config.label_sigma_window})
    lf = lf.with_columns(
        *(per_symbol(ret_1.rolling_std(w, min_samples=w), f"_rstd_{w}") for w in sigma_windows),
        _macd=pl.col("_ema_fast") - pl.col("_ema_slow"),
    )
    macd_line = pl.col("_macd")
    lf = lf.with_columns(per_symbol(ema_expr(macd_line, config.macd_signal), "_macd_signal"))
    k = config.bollinger_k
    mid, std, signal = pl.col("_bb_mid"), pl.col("_bb_std"), pl.col("_macd_signal")
    fwd = pl.col("_log_close_ahead") - log_close
    sigma = pl.col(f"_rstd_{config.label_sigma_window}") * math.sqrt(horizon)
    epoch_minutes = pl.col("ts").dt.epoch("us") // 60_000_000
    lf = lf.with_columns(
        *((ret_1 if h == 1 else pl.col(f"ret_{h}")).alias(f"ret_{h}") for h in config.return_horizons),
        *(pl.col(f"_rstd_{w}").alias(f"rvol_{w}") for w in config.volatility_windows),
        rsi=rsi_from_averages(pl.col("_avg_up"), pl.col("_avg_down")),
        macd=macd_line / close,
        macd_signal=signal / close,
        macd_hist=(macd_line - signal) / close,
        bb_pos=deviation_ratio(close - mid, k * std, mid),
        bb_width=pl.when(mid > 0).then(2.0 * k * std / mid),
        volume_z=deviation_ratio(log_volume - pl.col("_vol_mean"), pl.col("_vol_std"), pl.col("_vol_mean")),
        minute_of_day=(epoch_minutes % _MINUTES_PER_DAY).cast(pl.Int32),
        day_of_week=(_minute_of_week(epoch_minutes) // _MINUTES_PER_DAY).cast(pl.Int8),
        **{name: session_expr(pl.col("ts"), tz, start, end) for name, (tz, start, end) in SESSIONS.items()},
        fwd_return=fwd,
        label=pl.when(fwd.is_null() | sigma.is_null())
        .then(None)
        .when(fwd.abs() < config.label_neutral_sigma * sigma)
        .then(0)
        .otherwise(fwd.sign())
        .cast(pl.Int8),
    )
    features = feature_columns(config)
    floats = [c for c in (*features, "fwd_return") if c not in CALENDAR_COLUMNS]
    # Safety net: anything non-finite that slipped past the guards becomes null, never NaN/inf downstream.
    lf = lf.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)
    return lf.select(*BAR_SCHEMA, *features, *LABEL_COLUMNS)


def build_features(bars: pl.DataFrame, config: FeaturesConfig) -> pl.DataFrame:
    """Run the pipeline and drop warm-up rows (any feature null, or the label's sigma not yet available).

    Labels stay null on each symbol's last `label_horizon` rows; drop null labels before training.
    """
    features = feature_columns(config)
    # A null label with a known forward return means the label's trailing sigma is still warming up.
    warm = pl.all_horizontal(pl.col(c).is_not_null() for c in features) & (
        pl.col("label").is_not_null() | pl.col("fwd_return").is_null()
    )
    return feature_pipeline(bars.lazy(), config).filter(warm).collect(engine=COLLECT_ENGINE)


def run_features(spec: DatasetSpec, data_root: Path, config: FeaturesConfig) -> Path:
    """Build features of a validated dataset and write them atomically under `<data_root>/features/`."""
    bars = read_bars(require_validated(spec, data_root))
    return write_frame(dataset_path(data_root, "features", spec), build_features(bars, config))


def features_summary(df: pl.DataFrame) -> dict[str, Any]:
    """Metrics of a built feature frame: rows, symbols, time span, labelled rows and label balance."""
    labels = df["label"].drop_nulls()
    counts = {name: int((labels == value).sum()) for name, value in (("sell", -1), ("hold", 0), ("buy", 1))}
    n = max(labels.len(), 1)
    return {
        "rows": df.height,
        "symbols": df["symbol"].n_unique(),
        "first_ts": None if df.height == 0 else str(df["ts"].min()),
        "last_ts": None if df.height == 0 else str(df["ts"].max()),
        "labelled_rows": labels.len(),
        "label_counts": counts,
        "label_shares": {name: count / n for name, count in counts.items()},
    }
