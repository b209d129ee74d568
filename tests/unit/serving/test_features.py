from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features, feature_columns
from gpt_trader.data.sources.bundled import CATALOG, BundledSource
from gpt_trader.serving.features import LiveFeatures


def bars_of(frame: pl.DataFrame) -> list[Bar]:
    return [Bar(**row) for row in frame.iter_rows(named=True)]


@pytest.mark.parametrize(
    ("symbol", "config"),
    [
        ("SPX", FeaturesConfig()),
        ("EURUSD", FeaturesConfig()),
        (
            "GOOGL",
            FeaturesConfig(
                return_horizons=[1, 3],
                volatility_windows=[10],
                rsi_window=7,
                macd_fast=5,
                macd_slow=13,
                macd_signal=4,
                bollinger_window=10,
                volume_z_window=10,
            ),
        ),
    ],
)
def test_live_features_equal_offline_pipeline_on_real_series(symbol, config):
    raw = BundledSource().fetch(symbol, None, None, Timeframe.parse(CATALOG[symbol].timeframe))
    offline = build_features(raw, config)
    cols = feature_columns(config)
    live = LiveFeatures(config)
    rows = {}
    for bar in bars_of(raw):
        vec = live.update(bar)
        if vec is not None:
            rows[bar.ts] = vec
    # Live warm-up needs no label sigma, so it may start earlier; every offline row must be matched.
    assert set(offline["ts"].to_list()) <= set(rows)
    got = np.vstack([rows[ts] for ts in offline["ts"].to_list()])
    want = offline.select(cols).to_numpy().astype(float)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_live_features_refuse_out_of_order_and_bad_bars():
    raw = bars_of(BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).head(3))
    live = LiveFeatures(FeaturesConfig())
    live.update(raw[1])
    with pytest.raises(ValueError, match="not after the previous bar"):
        live.update(raw[0])
    with pytest.raises(ValueError, match="unusable bar"):
        live.update(replace(raw[2], close=float("nan")))


def test_live_features_fifty_symbols_update_cost_is_small():
    # Not a timing assertion: prints the per-bar cost so regressions are visible in the test log.
    raw = bars_of(BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).head(400))
    live = LiveFeatures(FeaturesConfig())
    for i in range(50):
        live.warm_up([replace(b, symbol=f"S{i}") for b in raw[:-1]])
    start = time.perf_counter()
    out = [live.update(replace(raw[-1], symbol=f"S{i}")) for i in range(50)]
    elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"50-symbol live feature update: {elapsed_ms:.2f} ms")
    assert all(v is not None and np.isfinite(v).all() for v in out)
