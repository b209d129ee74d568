"""Feature pipeline: parity with `ta`, no look-ahead, per-symbol isolation, no NaN/inf, labels, calendar, I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl
import pytest
import ta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from gpt_trader.core.errors import ValidationFailedError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DatasetSpec, FeaturesConfig
from gpt_trader.data.features import (
    CALENDAR_COLUMNS,
    LABEL_COLUMNS,
    SESSIONS,
    bollinger_exprs,
    build_features,
    feature_columns,
    feature_pipeline,
    features_summary,
    macd_exprs,
    rsi_expr,
    run_features,
    session_expr,
)
from gpt_trader.data.sources.bundled import CATALOG, BundledSource
from gpt_trader.data.store import dataset_path, write_frame

CONFIG = FeaturesConfig()
FEATURES = feature_columns(CONFIG)
PRICE_COLUMNS = ("open", "high", "low", "close")


@cache
def bundled(symbol: str) -> pl.DataFrame:
    return BundledSource().fetch(symbol, None, None, Timeframe.parse(CATALOG[symbol].timeframe))


def spx_slice(n: int = 400) -> pl.DataFrame:
    return bundled("SPX").slice(1000, n)


def pipeline(bars: pl.DataFrame, config: FeaturesConfig = CONFIG) -> pl.DataFrame:
    return feature_pipeline(bars.lazy(), config).collect()


def assert_close(actual: np.ndarray, expected: np.ndarray, *, rtol: float = 1e-9, atol: float = 0.0) -> None:
    """Same warm-up (NaN positions), then values within tolerance after it."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    assert ok.sum() > 0
    np.testing.assert_allclose(actual[ok], expected[ok], rtol=rtol, atol=atol)


def as_numpy(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Float64).fill_null(float("nan")).to_numpy()


def non_finite_counts(df: pl.DataFrame) -> dict[str, int]:
    floats = [c for c, t in df.schema.items() if t.is_float()]
    counts = df.select(pl.col(c).is_nan().sum() + pl.col(c).is_infinite().sum() for c in floats).row(0)
    return {c: n for c, n in zip(floats, counts, strict=True) if n}


# --- API shape ---


def test_feature_columns_default_config_lists_every_feature_once():
    assert [
        "ret_1", "ret_5", "ret_20", "rvol_20", "rvol_60", "rsi", "macd", "macd_signal", "macd_hist",
        "bb_pos", "bb_width", "volume_z", *CALENDAR_COLUMNS,
    ] == FEATURES  # fmt: skip
    assert len(set(FEATURES)) == len(FEATURES)
    assert not set(FEATURES) & set(LABEL_COLUMNS)


def test_feature_pipeline_returns_lazy_frame_with_bars_features_labels():
    lf = feature_pipeline(spx_slice(100).lazy(), CONFIG)
    assert isinstance(lf, pl.LazyFrame)
    schema = lf.collect_schema()
    assert list(schema) == ["ts", "symbol", "source", "open", "high", "low", "close", "volume", *FEATURES, "fwd_return",
                            "label"]  # fmt: skip
    assert schema["label"] == pl.Int8


# --- parity with `ta` on real data (raw, un-normalized values) ---


def test_rsi_expr_spx_matches_ta_rsi_indicator():
    bars = bundled("SPX")
    ours = bars.select(rsi_expr(pl.col("close"), 14))
    expected = ta.momentum.RSIIndicator(bars["close"].to_pandas(), window=14).rsi().to_numpy()
    assert_close(as_numpy(ours.to_series()), expected, rtol=1e-9)


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5)])
def test_macd_exprs_spx_matches_ta_macd(fast, slow, signal):
    bars = bundled("SPX")
    ours = bars.select(**macd_exprs(pl.col("close"), fast, slow, signal))
    ref = ta.trend.MACD(bars["close"].to_pandas(), window_slow=slow, window_fast=fast, window_sign=signal)
    # MACD crosses zero, so a pure relative tolerance is meaningless there: allow 1e-12 of the price level.
    atol = 1e-12 * bars["close"].max()  # type: ignore[operator]
    for name, expected in (("macd", ref.macd()), ("macd_signal", ref.macd_signal()), ("macd_hist", ref.macd_diff())):
        assert_close(as_numpy(ours[name]), expected.to_numpy(), rtol=1e-9, atol=atol)


def test_bollinger_exprs_spx_matches_ta_bollinger_bands():
    bars = bundled("SPX")
    ours = bars.select(**bollinger_exprs(pl.col("close"), 20, 2.0))
    ref = ta.volatility.BollingerBands(bars["close"].to_pandas(), window=20, window_dev=2)
    assert_close(as_numpy(ours["mid"]), ref.bollinger_mavg().to_numpy())
    assert_close(as_numpy(ours["upper"]), ref.bollinger_hband().to_numpy())
    assert_close(as_numpy(ours["lower"]), ref.bollinger_lband().to_numpy())


def test_feature_pipeline_spx_indicators_equal_ta_normalized():
    bars = bundled("SPX")
    out = pipeline(bars)
    close = bars["close"].to_pandas()
    close_np = close.to_numpy()
    rsi = ta.momentum.RSIIndicator(close, window=CONFIG.rsi_window).rsi().to_numpy()
    macd = ta.trend.MACD(close, CONFIG.macd_slow, CONFIG.macd_fast, CONFIG.macd_signal)
    bands = ta.volatility.BollingerBands(close, CONFIG.bollinger_window, CONFIG.bollinger_k)
    assert_close(as_numpy(out["rsi"]), rsi)
    assert_close(as_numpy(out["macd"]), macd.macd().to_numpy() / close_np, rtol=1e-9, atol=1e-12)
    assert_close(as_numpy(out["macd_signal"]), macd.macd_signal().to_numpy() / close_np, rtol=1e-9, atol=1e-12)
    assert_close(as_numpy(out["macd_hist"]), macd.macd_diff().to_numpy() / close_np, rtol=1e-9, atol=1e-12)
    # bb_pos is the band position in [-1, 1] at the bands: 2 * %B - 1.
    assert_close(as_numpy(out["bb_pos"]), 2 * bands.bollinger_pband().to_numpy() - 1, rtol=1e-9, atol=1e-9)
    assert_close(as_numpy(out["bb_width"]), bands.bollinger_wband().to_numpy() / 100, rtol=1e-9)


def test_feature_pipeline_returns_volatility_volume_z_match_pandas_definitions():
    bars = spx_slice(600)
    out = pipeline(bars)
    pdf = bars.to_pandas()
    log_close = np.log(pdf["close"])
    for h in CONFIG.return_horizons:
        assert_close(as_numpy(out[f"ret_{h}"]), np.log(pdf["close"] / pdf["close"].shift(h)).to_numpy())
    ret_1 = log_close.diff()
    for w in CONFIG.volatility_windows:
        assert_close(as_numpy(out[f"rvol_{w}"]), ret_1.rolling(w).std().to_numpy(), rtol=1e-7)
    log_volume = np.log1p(pdf["volume"])
    w = CONFIG.volume_z_window
    z = (log_volume - log_volume.rolling(w).mean()) / log_volume.rolling(w).std()
    assert_close(as_numpy(out["volume_z"]), z.to_numpy(), rtol=1e-7, atol=1e-9)


# --- no look-ahead ---


def perturb_after(bars: pl.DataFrame, t: int, factors: list[float]) -> pl.DataFrame:
    """Scale prices and volume of rows after t by per-row factors (OHLC stays consistent)."""
    n_after = bars.height - t - 1
    scale = [1.0] * (t + 1) + [factors[i % len(factors)] for i in range(n_after)]
    s = pl.Series("scale", scale)
    return bars.with_columns(*(pl.col(c) * s for c in PRICE_COLUMNS), pl.col("volume") * s * s)


@pytest.mark.parametrize("t", [0, 30, 59, 60, 150, 250, 398])
def test_feature_pipeline_future_rows_changed_past_features_unchanged(t):
    bars = spx_slice(400)
    base = pipeline(bars)
    changed = pipeline(perturb_after(bars, t, [1.07, 0.9, 1.3, 0.5]))
    assert_frame_equal(base.select(FEATURES).head(t + 1), changed.select(FEATURES).head(t + 1))
    # The test can fail: the label at t looks one bar ahead, and features after t do move.
    assert base["fwd_return"][t] != changed["fwd_return"][t]
    assert not base.select(FEATURES[:5]).slice(t + 1).equals(changed.select(FEATURES[:5]).slice(t + 1))


def test_feature_pipeline_truncated_future_past_features_unchanged():
    bars = spx_slice(400)
    base = pipeline(bars)
    for t in (70, 200, 333):
        prefix = pipeline(bars.head(t + 1))
        assert_frame_equal(base.select(FEATURES).head(t + 1), prefix.select(FEATURES))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=st.integers(min_value=0, max_value=398),
    factors=st.lists(st.floats(min_value=0.2, max_value=5.0), min_size=1, max_size=8),
    horizon=st.integers(min_value=1, max_value=5),
    truncate=st.booleans(),
)
def test_feature_pipeline_any_future_change_never_moves_past_features(t, factors, horizon, truncate):
    config = FeaturesConfig(label_horizon=horizon, return_horizons=[1, 3, 10], volatility_windows=[5, 30])
    features = feature_columns(config)
    bars = spx_slice(400)
    base = pipeline(bars, config)
    future = bars.head(t + 1) if truncate else perturb_after(bars, t, factors)
    changed = pipeline(future, config)
    assert_frame_equal(base.select(features).head(t + 1), changed.select(features).head(t + 1))
    # Labels see exactly H bars ahead: rows at or before t - H are untouched, the row at t - H + 1.. may move.
    keep = max(t - horizon + 1, 0)
    assert_frame_equal(base.select(LABEL_COLUMNS).head(keep), changed.select(LABEL_COLUMNS).head(keep))


def test_labels_do_change_when_future_changes():
    bars = spx_slice(400)
    t = 200
    base = pipeline(bars)
    changed = pipeline(perturb_after(bars, t, [0.5]))
    assert base["fwd_return"][t] != changed["fwd_return"][t]
    assert base["label"][t] == 1
    assert changed["label"][t] == -1


# --- many symbols ---


def test_feature_pipeline_two_symbols_equal_each_computed_alone():
    spx, googl = bundled("SPX").tail(900), bundled("GOOGL").head(700)
    # Interleaved, unsorted input: the pipeline sorts by symbol, ts itself.
    together = pipeline(pl.concat([googl, spx]).sample(fraction=1.0, shuffle=True, seed=3))
    alone = pl.concat([pipeline(googl), pipeline(spx)])
    assert together["symbol"].to_list() == ["GOOGL"] * 700 + ["SPX"] * 900
    assert_frame_equal(together, alone)
    # Each symbol's warm-up restarts: SPX's first row follows GOOGL's last, yet has no return and no RSI.
    first_spx = together.filter(pl.col("symbol") == "SPX").head(1)
    assert first_spx["ret_1"].is_null().all()
    assert first_spx["rsi"].is_null().all()


def test_build_features_two_symbols_last_horizon_labels_null_per_symbol():
    config = FeaturesConfig(label_horizon=3)
    bars = pl.concat([bundled("SPX").tail(300), bundled("IXIC").tail(300)])
    out = build_features(bars, config)
    for _, group in out.group_by("symbol"):
        assert group["label"].tail(3).is_null().all()
        assert group["label"].head(group.height - 3).is_not_null().all()


# --- real data, all bundled series ---


@pytest.mark.parametrize("symbol", sorted(CATALOG))
def test_build_features_bundled_dataset_finite_complete_all_classes(symbol):
    bars = bundled(symbol)
    out = build_features(bars, CONFIG)
    assert out.columns == [*bars.columns, *FEATURES, *LABEL_COLUMNS]
    assert non_finite_counts(out) == {}
    assert out.select(FEATURES).null_count().sum_horizontal().item() == 0
    # Warm-up dropped: the longest window is 60 bars of 1-bar returns (61 bars).
    assert out.height == bars.height - max([*CONFIG.volatility_windows, CONFIG.label_sigma_window])
    assert out["label"].null_count() == CONFIG.label_horizon
    assert set(out["label"].drop_nulls().unique().to_list()) == {-1, 0, 1}
    assert out["rsi"].is_between(0, 100).all()


def test_build_features_flat_prices_zero_volume_no_nan_defined_limits():
    bars = spx_slice(200)
    flat = pl.Series([i >= 100 for i in range(200)])
    level = bars["close"][99]
    bars = bars.with_columns(
        *(pl.when(flat).then(level).otherwise(pl.col(c)).alias(c) for c in PRICE_COLUMNS),
        pl.when(flat).then(0.0).otherwise(pl.col("volume")).alias("volume"),
    )
    out = build_features(bars, CONFIG)
    assert non_finite_counts(out) == {}
    settled = out.filter(pl.col("ts") >= bars["ts"][100 + 60])
    assert settled.height > 0
    assert (settled["bb_pos"] == 0).all()
    assert (settled["volume_z"] == 0).all()
    assert (settled["rvol_20"] == 0).all()
    assert (settled["label"].drop_nulls() == 0).all()
    # Wilder's averages decay together on a flat stretch, so the RSI freezes at its last value.
    assert settled["rsi"].to_list() == pytest.approx([settled["rsi"][0]] * settled.height, rel=1e-12)


def test_rsi_expr_no_movement_is_fifty_not_nan():
    out = pl.DataFrame({"close": [5.0] * 30}).select(rsi_expr(pl.col("close"), 14)).to_series()
    assert out.drop_nulls().to_list() == [50.0] * 17


# --- labels ---


def test_labels_neutral_sigma_zero_label_is_sign_of_forward_return():
    config = FeaturesConfig(label_neutral_sigma=0.0, label_horizon=5)
    bars = spx_slice(300)
    out = build_features(bars, config).drop_nulls(LABEL_COLUMNS)
    expected = np.sign(out["fwd_return"].to_numpy())
    np.testing.assert_array_equal(out["label"].to_numpy(), expected)


def test_labels_forward_return_and_band_use_trailing_sigma():
    config = FeaturesConfig(label_horizon=4, label_neutral_sigma=0.5, label_sigma_window=30)
    bars = spx_slice(300)
    out = pipeline(bars, config)
    pdf = bars.to_pandas()
    log_close = np.log(pdf["close"])
    fwd = (log_close.shift(-4) - log_close).to_numpy()
    assert_close(as_numpy(out["fwd_return"]), fwd)
    sigma = (log_close.diff().rolling(30).std() * math.sqrt(4)).to_numpy()
    expected = np.where(np.abs(fwd) < 0.5 * sigma, 0.0, np.sign(fwd))
    expected[np.isnan(fwd) | np.isnan(sigma)] = np.nan
    np.testing.assert_array_equal(as_numpy(out["label"]), expected)
    assert out["label"].tail(4).is_null().all()


# --- calendar ---


def test_calendar_fields_hourly_sessions_follow_local_time_and_dst():
    # Monday 2024-01-08 (winter) and Monday 2024-07-08 (summer), hourly, plus Saturday 2024-01-13.
    starts = [datetime(2024, 1, 8, tzinfo=UTC), datetime(2024, 7, 8, tzinfo=UTC), datetime(2024, 1, 13, tzinfo=UTC)]
    ts = [s + timedelta(minutes=30 * i) for s in starts for i in range(48)]
    bars = pl.DataFrame({"ts": ts}).with_columns(
        symbol=pl.lit("X"), source=pl.lit("t"), open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0
    )
    out = pipeline(bars).with_columns(hm=pl.col("ts").dt.strftime("%m-%d %H:%M"))

    def at(stamp: str) -> dict:
        return out.filter(pl.col("hm") == stamp).row(0, named=True)

    assert at("01-08 14:30")["minute_of_day"] == 870
    assert at("01-08 14:30")["day_of_week"] == 0
    assert at("01-13 14:30")["day_of_week"] == 5
    # New York opens 14:30 UTC in winter (EST), 13:30 UTC in summer (EDT); closes 21:00 / 20:00 UTC.
    assert (at("01-08 14:00")["is_us_session"], at("01-08 14:30")["is_us_session"]) == (0, 1)
    assert (at("01-08 20:30")["is_us_session"], at("01-08 21:00")["is_us_session"]) == (1, 0)
    assert (at("07-08 13:00")["is_us_session"], at("07-08 13:30")["is_us_session"]) == (0, 1)
    # London 08:00-16:30 local: 08:00 UTC in winter, 07:00 UTC in summer (BST).
    assert (at("01-08 07:30")["is_europe_session"], at("01-08 08:00")["is_europe_session"]) == (0, 1)
    assert (at("07-08 07:00")["is_europe_session"], at("07-08 15:30")["is_europe_session"]) == (1, 0)
    # Tokyo 09:00-15:00 JST (UTC+9, no DST) = 00:00-06:00 UTC.
    assert (at("01-08 00:00")["is_asia_session"], at("01-08 06:00")["is_asia_session"]) == (1, 0)
    # Weekends are never in session.
    weekend = out.filter(pl.col("ts").dt.weekday() >= 6)
    assert weekend.select(list(CALENDAR_COLUMNS)[2:]).sum().sum_horizontal().item() == 0


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_session_flags_equal_time_zone_conversion_1970_to_2099(name):
    tz, open_minute, close_minute = SESSIONS[name]
    # Every 15 minutes across several DST eras (US rule changes in 1987 and 2007, EU in 1996), then sparse.
    dense = [
        pl.datetime_range(datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC), "15m", eager=True)
        for y in (1975, 1990, 2006, 2007, 2024)
    ]
    sparse = pl.datetime_range(datetime(1970, 1, 1, tzinfo=UTC), datetime(2099, 12, 31, tzinfo=UTC), "97m", eager=True)
    ts = pl.concat([*dense, sparse]).dt.cast_time_unit("us").alias("ts")
    local = pl.col("ts").dt.convert_time_zone(tz)
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    expected = (local.dt.weekday() <= 5) & (minute >= open_minute) & (minute < close_minute)
    out = pl.DataFrame(ts).select(
        got=session_expr(pl.col("ts"), tz, open_minute, close_minute), expected=expected.cast(pl.Int8)
    )
    assert (out["got"] == out["expected"]).all()
    assert 0 < out["got"].mean() < 1  # type: ignore[operator]


def test_calendar_fields_daily_bars_intraday_fields_constant():
    out = build_features(bundled("GOOGL"), CONFIG)
    assert out["minute_of_day"].unique().to_list() == [0]
    for flag in ("is_us_session", "is_europe_session", "is_asia_session"):
        assert out[flag].n_unique() == 1
    assert sorted(out["day_of_week"].unique().to_list()) == [0, 1, 2, 3, 4]


# --- stage I/O and summary ---


def test_run_features_validated_dataset_writes_features_parquet(tmp_path):
    spec = DatasetSpec(source="bundled", symbol="GOOGL", timeframe="1d")
    write_frame(dataset_path(tmp_path, "validated", spec), bundled("GOOGL"))
    path = run_features(spec, tmp_path, CONFIG)
    assert path == dataset_path(tmp_path, "features", spec)
    assert_frame_equal(pl.read_parquet(path), build_features(bundled("GOOGL"), CONFIG))
    assert not list(path.parent.glob(".*.tmp"))


def test_run_features_unvalidated_dataset_raises(tmp_path):
    spec = DatasetSpec(source="bundled", symbol="GOOGL", timeframe="1d")
    with pytest.raises(ValidationFailedError, match="not been validated"):
        run_features(spec, tmp_path, CONFIG)
    assert not dataset_path(tmp_path, "features", spec).exists()


def test_features_summary_counts_rows_span_and_label_balance():
    out = build_features(spx_slice(300), CONFIG)
    summary = features_summary(out)
    assert summary["rows"] == out.height
    assert summary["symbols"] == 1
    assert summary["labelled_rows"] == out.height - 1
    assert sum(summary["label_counts"].values()) == out.height - 1
    assert sum(summary["label_shares"].values()) == pytest.approx(1.0)
    assert summary["first_ts"] == str(out["ts"].min())
