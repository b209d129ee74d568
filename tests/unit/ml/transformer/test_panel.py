from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import polars as pl
import pytest

from gpt_trader.core.errors import DataError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.transformer.panel import (
    IGNORE_INDEX,
    Normalizer,
    build_panel,
    ensure_features,
    market_feature_indices,
)
from tests.unit.ml.transformer.synthetic import COLUMNS, FEATURES, synthetic_features


def test_build_panel_two_symbols_aligned_on_common_timestamps():
    frame = synthetic_features(50, symbols=("AAA", "BBB"))
    frame = frame.filter(~((pl.col("symbol") == "BBB") & (pl.col("ts") == frame["ts"][10])))
    panel = build_panel(frame, COLUMNS)
    assert panel.symbols == ("AAA", "BBB")
    assert panel.features.shape == (49, 2, len(COLUMNS))
    assert panel.calendar.shape == (49, 5)
    assert set(np.unique(panel.labels)) <= {0, 1, 2}


def test_build_panel_null_labels_become_ignored_and_nan_returns():
    frame = synthetic_features(30).with_columns(
        pl.when(pl.int_range(pl.len()) >= 28).then(None).otherwise(pl.col("label")).alias("label"),
        pl.when(pl.int_range(pl.len()) >= 28).then(None).otherwise(pl.col("fwd_return")).alias("fwd_return"),
    )
    panel = build_panel(frame, COLUMNS)
    assert (panel.labels[28:] == IGNORE_INDEX).all()
    assert np.isnan(panel.fwd_return[28:]).all()
    assert np.isnan(panel.next_return[-1]).all()
    assert np.isfinite(panel.next_return[:-1]).all()


def test_build_panel_missing_feature_column_raises_naming_it():
    frame = synthetic_features(20).drop("rsi")
    with pytest.raises(DataError, match="rsi"):
        build_panel(frame, COLUMNS)


def test_build_panel_nan_feature_raises_naming_column():
    frame = synthetic_features(20).with_columns(pl.lit(float("nan")).alias("macd"))
    with pytest.raises(DataError, match="macd"):
        build_panel(frame, COLUMNS)


def test_build_panel_unknown_symbol_raises():
    with pytest.raises(DataError, match="ZZZ"):
        build_panel(synthetic_features(20), COLUMNS, ("ZZZ",))


def test_normalizer_fit_on_train_rows_ignores_later_rows():
    panel = build_panel(synthetic_features(200), COLUMNS)
    train = panel.rows(0, 100)
    fitted = Normalizer.fit(train)
    shifted = panel.features.copy()
    shifted[100:] += 1000.0  # a regime change after the training range must not move the scaling
    moved = Normalizer.fit(dataclasses.replace(panel, features=shifted).rows(0, 100))
    np.testing.assert_array_equal(fitted.mean, moved.mean)
    np.testing.assert_allclose(fitted.mean, train.features.reshape(-1, len(COLUMNS)).mean(0), rtol=1e-5, atol=1e-6)
    z = fitted.transform(train.features)
    np.testing.assert_allclose(z.reshape(-1, len(COLUMNS)).std(0), 1.0, rtol=1e-3)


def test_normalizer_constant_feature_gets_unit_scale():
    panel = build_panel(synthetic_features(50).with_columns(pl.lit(3.0).alias("rsi")), COLUMNS)
    fitted = Normalizer.fit(panel)
    j = COLUMNS.index("rsi")
    assert fitted.std[j] == 1.0
    assert np.isfinite(fitted.transform(panel.features)).all()


def test_normalizer_round_trips_through_dict():
    fitted = Normalizer.fit(build_panel(synthetic_features(40), COLUMNS))
    again = Normalizer.from_dict(fitted.to_dict())
    np.testing.assert_array_equal(again.mean, fitted.mean)
    assert again.target_std == fitted.target_std


def test_ensure_features_raw_bars_builds_features():
    bars = BundledSource().fetch(
        "GOOGL", datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC), Timeframe.parse("1d")
    )
    built = ensure_features(bars.drop("source").to_pandas(), FEATURES)
    expected = build_features(bars, FEATURES)
    assert built.height == expected.height
    assert all(c in built.columns for c in COLUMNS)


def test_ensure_features_pandas_feature_frame_passes_through():
    frame = synthetic_features(20)
    out = ensure_features(frame.to_pandas(), FEATURES)
    assert out.height == 20


def test_ensure_features_neither_bars_nor_features_raises():
    with pytest.raises(DataError, match="neither a feature frame"):
        ensure_features(pd.DataFrame({"ts": [1], "price": [1.0]}), FEATURES)


def test_ensure_features_too_few_bars_raises():
    bars = BundledSource().fetch(
        "GOOGL", datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 2, 1, tzinfo=UTC), Timeframe.parse("1d")
    )
    with pytest.raises(DataError, match="warm-up"):
        ensure_features(bars, FEATURES)


def test_market_feature_indices_point_at_volume_and_volatility():
    vol, rvol = market_feature_indices(COLUMNS)
    assert COLUMNS[vol] == "volume_z"
    assert COLUMNS[rvol].startswith("rvol_")
