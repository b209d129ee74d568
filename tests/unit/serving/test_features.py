from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features, feature_columns
from gpt_trader.data.sources.bundled import CATALOG, BundledSource
from gpt_trader.serving.features import LiveFeatures


def bars_of(frame: pl.DataFrame) -> list[Bar]:
    return [Bar(**row) for row in frame.iter_rows(named=True)]


def short_windows(horizons: list[int], vols: list[int], rsi: int, macd: tuple[int, int, int], window: int):
    """A config with short windows (Bollinger and volume z both `window`), so that series warm up quickly."""
    fast, slow, signal = macd
    return FeaturesConfig(
        return_horizons=horizons,
        volatility_windows=vols,
        rsi_window=rsi,
        macd_fast=fast,
        macd_slow=slow,
        macd_signal=signal,
        bollinger_window=window,
        volume_z_window=window,
    )


def bundled(symbol: str) -> pl.DataFrame:
    return BundledSource().fetch(symbol, None, None, Timeframe.parse(CATALOG[symbol].timeframe))


def mixed_series() -> dict[str, pl.DataFrame]:
    """Real series that join at different times, miss some timestamps and mix daily with hourly bars."""
    return {
        "SPX": bundled("SPX").tail(1500),
        "IXIC": bundled("IXIC").filter(pl.col("ts") >= datetime(2016, 3, 1, tzinfo=UTC)),
        "GOOGL": bundled("GOOGL").tail(1200).filter(pl.int_range(pl.len()) % 5 != 3),
        "EURUSD": bundled("EURUSD"),
    }


def batches_of(series: dict[str, pl.DataFrame], by: str) -> list[list[Bar]]:
    """All bars in batches of distinct symbols: those of one timestamp (`by="ts"`), or the i-th bar of every
    symbol (`by="position"`: timestamps differ within a batch)."""
    groups: dict[object, list[Bar]] = defaultdict(list)
    for frame in series.values():
        for i, bar in enumerate(bars_of(frame)):
            groups[bar.ts if by == "ts" else i].append(bar)
    return [groups[key] for key in sorted(groups)]  # type: ignore[type-var]


def assert_same(got: list[np.ndarray | None], want: list[np.ndarray | None]) -> None:
    assert [v is None for v in got] == [v is None for v in want]
    for g, w in zip(got, want, strict=True):
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("symbol", "config"),
    [
        ("SPX", FeaturesConfig()),
        ("EURUSD", FeaturesConfig()),
        (
            "GOOGL",
            short_windows([1, 3], [10], rsi=7, macd=(5, 13, 4), window=10),
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


@pytest.mark.parametrize("by", ["ts", "position"])
def test_update_many_equals_update_and_offline_across_symbols(by):
    series = mixed_series()
    config = FeaturesConfig()
    batched, singles = LiveFeatures(config), {symbol: LiveFeatures(config) for symbol in series}
    rows: dict[tuple[str, datetime], np.ndarray] = {}
    for batch in batches_of(series, by):
        got = batched.update_many(batch)
        assert_same(got, [singles[bar.symbol].update(bar) for bar in batch])
        rows.update({(bar.symbol, bar.ts): vec for bar, vec in zip(batch, got, strict=True) if vec is not None})
    offline = build_features(pl.concat(series.values()), config)
    keys = list(zip(offline["symbol"].to_list(), offline["ts"].to_list(), strict=True))
    assert set(keys) <= set(rows)
    assert offline["symbol"].n_unique() == len(series)
    got_rows = np.vstack([rows[key] for key in keys])
    np.testing.assert_allclose(got_rows, offline.select(feature_columns(config)).to_numpy(), rtol=1e-9, atol=1e-12)


def test_update_and_update_many_share_state():
    # Alternating single and batched updates of the same symbols gives what either alone gives.
    series = mixed_series()
    alternating, reference = LiveFeatures(FeaturesConfig()), LiveFeatures(FeaturesConfig())
    for i, batch in enumerate(batches_of(series, "ts")[:800]):
        want = reference.update_many(batch)
        got = alternating.update_many(batch) if i % 2 else [alternating.update(bar) for bar in batch]
        assert_same(got, want)


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (lambda bars: [*bars, bars[1]], "SPX: more than one bar"),
        (lambda bars: [*bars[:2], replace(bars[2], ts=bars[2].ts - timedelta(days=400))], "not after the previous"),
        (lambda bars: [*bars[:2], replace(bars[2], close=float("nan"))], "unusable bar"),
        (lambda bars: [*bars[:2], replace(bars[2], volume=-1.0)], "unusable bar"),
        (lambda bars: [replace(bars[0], symbol="NEW"), replace(bars[1], close=0.0)], "unusable bar"),
    ],
)
def test_refused_batch_leaves_every_symbol_unchanged(spoil, match):
    series = {s: bundled(s).head(300) for s in ("GOOGL", "SPX", "IXIC")}
    batches = batches_of(series, "position")
    live, clean = LiveFeatures(FeaturesConfig()), LiveFeatures(FeaturesConfig())
    for batch in batches[:150]:
        live.update_many(batch)
        clean.update_many(batch)
    with pytest.raises(ValueError, match=match):
        live.update_many(spoil(batches[150]))
    assert live._slots.keys() == clean._slots.keys()
    for batch in batches[150:]:
        assert_same(live.update_many(batch), clean.update_many(batch))


def test_update_many_of_nothing_and_of_warming_symbols():
    live = LiveFeatures(FeaturesConfig())
    assert live.update_many([]) == []
    bars = bars_of(bundled("SPX").head(3))
    assert live.update_many([replace(bars[0], symbol=f"S{i}") for i in range(20)]) == [None] * 20


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.floats(0.5, 2.0), st.sampled_from([0.0, 1.0, 1e3, 5e6]), st.booleans()),
            min_size=4,
            max_size=4,
        ),
        min_size=30,
        max_size=90,
    )
)
def test_update_many_equals_update_on_random_series(steps):
    # Four symbols of random walks (flat stretches and zero volume included) present or absent per timestamp.
    config = short_windows([1, 2], [3, 5], rsi=3, macd=(2, 4, 3), window=4)
    batched, singles = LiveFeatures(config), [LiveFeatures(config) for _ in range(4)]
    price = [100.0] * 4
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for t, step in enumerate(steps):
        batch = []
        for i, (move, volume, present) in enumerate(step):
            if present:
                price[i] *= 1.0 if move < 0.8 else move
                ts = start + timedelta(hours=t)
                batch.append(Bar(ts, f"S{i}", "test", price[i], price[i], price[i], price[i], volume))
        got = batched.update_many(batch)
        assert_same(got, [singles[int(bar.symbol[1:])].update(bar) for bar in batch])
