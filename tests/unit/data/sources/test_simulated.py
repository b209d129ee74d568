from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpt_trader.core.errors import ConfigError, SourceError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DataConfig, SimulatedConfig
from gpt_trader.data.sources import build_source
from gpt_trader.data.sources.simulated import (
    BLOCK_BARS,
    MAX_WINDOW_BARS,
    Regime,
    SimulatedSource,
    simulate_regimes,
)

TF_1M = Timeframe.parse("1m")
TF_5M = Timeframe.parse("5m")
TF_1H = Timeframe.parse("1h")
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)


def source(**overrides: object) -> SimulatedSource:
    return SimulatedSource(SimulatedConfig(**overrides))  # type: ignore[arg-type]


def log_returns(bars: pl.DataFrame) -> np.ndarray:
    return np.log(bars["close"].to_numpy() / bars["open"].to_numpy())


def test_fetch_same_config_identical_frames():
    first = source(seed=3, n_bars=2000).fetch("AAA", None, None, TF_1M)
    second = source(seed=3, n_bars=2000).fetch("AAA", None, None, TF_1M)
    assert first.equals(second)


def test_fetch_different_seed_different_series():
    first = source(seed=3, n_bars=2000).fetch("AAA", None, None, TF_1M)
    second = source(seed=4, n_bars=2000).fetch("AAA", None, None, TF_1M)
    assert not np.allclose(first["close"].to_numpy(), second["close"].to_numpy())


def test_fetch_different_symbols_different_series():
    sim = source(n_bars=2000)
    first, second = sim.fetch("AAA", None, None, TF_1M), sim.fetch("BBB", None, None, TF_1M)
    assert first["ts"].equals(second["ts"])
    assert not np.allclose(first["close"].to_numpy(), second["close"].to_numpy())


def test_fetch_no_range_returns_n_bars_from_config_start():
    bars = source(start=date(2023, 6, 1), n_bars=500).fetch("AAA", None, None, TF_5M)
    assert bars.height == 500
    assert bars["ts"][0] == datetime(2023, 6, 1, tzinfo=UTC)
    assert bars["ts"][-1] == datetime(2023, 6, 1, tzinfo=UTC) + 499 * TF_5M.delta
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    assert set(bars["source"]) == {"simulated"}
    assert set(bars["symbol"]) == {"AAA"}


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 3 * BLOCK_BARS), min_size=2, max_size=4).map(sorted),
    seed=st.integers(0, 2**32),
)
def test_fetch_split_at_any_cuts_equals_single_fetch(cuts, seed):
    sim = source(seed=seed)
    bounds = [ORIGIN + k * TF_1M.delta for k in cuts]
    whole = sim.fetch("AAA", bounds[0], bounds[-1], TF_1M)
    pieces = pl.concat([sim.fetch("AAA", a, b, TF_1M) for a, b in pairwise(bounds)])
    assert pieces.equals(whole)
    assert whole.height == cuts[-1] - cuts[0]


def test_fetch_later_end_leaves_earlier_bars_unchanged():
    sim = source(n_bars=BLOCK_BARS - 10)
    stored = sim.fetch("AAA", None, None, TF_1M)
    extended = sim.fetch("AAA", None, ORIGIN + 3 * BLOCK_BARS * TF_1M.delta, TF_1M)
    assert extended.head(stored.height).equals(stored)
    # The capture stage's next fetch starts right after the last stored bar and continues the path.
    following = sim.fetch("AAA", stored["ts"][-1] + TF_1M.delta, None, TF_1M)
    assert following.height == 0
    after = sim.fetch("AAA", stored["ts"][-1] + TF_1M.delta, ORIGIN + 2 * BLOCK_BARS * TF_1M.delta, TF_1M)
    assert after["open"][0] == stored["close"][-1]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(-(2**40), 2**40),
    timeframe=st.sampled_from(["1s", "15s", "1m", "5m", "1h", "4h", "1d", "1w"]),
    correlation=st.floats(0.0, 0.99),
    n_bars=st.integers(1, 3000),
)
def test_fetch_any_seed_and_timeframe_satisfies_ohlc_invariants(seed, timeframe, correlation, n_bars):
    tf = Timeframe.parse(timeframe)
    bars = source(seed=seed, correlation=correlation, n_bars=n_bars).fetch("SYM/USD", None, None, tf)
    assert check_bars(bars, name="t").equals(bars)
    assert bars.height == n_bars
    o, h, lo, c, v = (bars[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (v >= 0).all()
    np.testing.assert_array_equal(o[1:], c[:-1])
    if n_bars >= 100:
        # Wicks stick out beyond the body on (almost) every bar.
        assert (h > np.maximum(o, c)).mean() > 0.95
        assert (lo < np.minimum(o, c)).mean() > 0.95


@pytest.mark.parametrize("timeframe", ["1s", "1m", "1h", "1d"])
def test_fetch_timeframe_bars_spaced_by_timeframe(timeframe):
    tf = Timeframe.parse(timeframe)
    bars = source(n_bars=1000).fetch("AAA", None, None, tf)
    gaps = bars["ts"].diff().drop_nulls().unique()
    assert gaps.to_list() == [tf.delta]
    # Per-bar volatility shrinks with the bar length: sqrt(seconds / year) scaling.
    sigma = log_returns(bars).std()
    assert 0.03 * np.sqrt(tf.seconds / (365.25 * 86400)) < sigma < 1.5 * np.sqrt(tf.seconds / (365.25 * 86400))


def test_fetch_unaligned_start_and_end_clipped_to_half_open_range():
    sim = source(n_bars=100)
    start = ORIGIN + timedelta(minutes=10, seconds=30)
    end = ORIGIN + timedelta(minutes=20)
    bars = sim.fetch("AAA", start, end, TF_1M)
    assert bars["ts"].to_list() == [ORIGIN + timedelta(minutes=m) for m in range(11, 20)]
    full = sim.fetch("AAA", None, None, TF_1M)
    assert bars.equals(full.slice(11, 9))


def test_fetch_start_before_config_start_begins_at_config_start():
    bars = source(n_bars=10).fetch("AAA", ORIGIN - timedelta(days=3), None, TF_1H)
    assert bars.height == 10
    assert bars["ts"][0] == ORIGIN


def test_fetch_end_after_n_bars_extends_series():
    bars = source(n_bars=10).fetch("AAA", None, ORIGIN + timedelta(hours=30), TF_1H)
    assert bars.height == 30


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (ORIGIN + timedelta(hours=10), None),  # after the default end
        (ORIGIN + timedelta(hours=5), ORIGIN + timedelta(hours=5)),
        (ORIGIN + timedelta(hours=6), ORIGIN + timedelta(hours=5)),
        (None, ORIGIN - timedelta(hours=1)),
    ],
)
def test_fetch_empty_range_returns_empty_frame_in_schema(start, end):
    bars = source(n_bars=10).fetch("AAA", start, end, TF_1H)
    assert bars.height == 0
    assert bars.schema == pl.Schema(BAR_SCHEMA)


def test_fetch_naive_datetimes_read_as_utc():
    sim = source(n_bars=50)
    aware = sim.fetch("AAA", ORIGIN + timedelta(hours=3), ORIGIN + timedelta(hours=9), TF_1H)
    naive = sim.fetch("AAA", datetime(2024, 1, 1, 3), datetime(2024, 1, 1, 9), TF_1H)  # noqa: DTZ001
    assert naive.equals(aware)


def test_fetch_window_beyond_limit_raises_source_error():
    with pytest.raises(SourceError, match="narrower"):
        source().fetch("AAA", None, ORIGIN + (MAX_WINDOW_BARS + 1) * Timeframe.parse("1s").delta, Timeframe.parse("1s"))


@pytest.mark.parametrize("correlation", [0.0, 0.3, 0.6, 0.9])
def test_fetch_two_symbols_return_correlation_near_config(correlation):
    sim = source(correlation=correlation, n_bars=60_000)
    first, second = sim.fetch("AAA", None, None, TF_1H), sim.fetch("BBB", None, None, TF_1H)
    measured = np.corrcoef(log_returns(first), log_returns(second))[0, 1]
    assert measured == pytest.approx(correlation, abs=0.025)


def test_config_negative_correlation_refused_at_load():
    with pytest.raises(ValidationError, match="correlation"):
        SimulatedConfig(correlation=-0.5)


def test_source_regime_vols_missing_regime_raises_config_error():
    with pytest.raises(ConfigError, match="extreme"):
        source(regime_vols={"quiet": 0.1, "normal": 0.2, "active": 0.3, "volatile": 0.4})


def test_simulate_regimes_long_run_visits_every_regime_with_neighbour_moves():
    regimes = simulate_regimes(SimulatedConfig(), TF_1H, 200_000)
    shares = np.bincount(regimes, minlength=len(Regime)) / regimes.size
    assert (shares > 0.02).all()
    steps = np.diff(regimes.astype(int))
    assert (steps != 0).sum() > 100
    # Consecutive hourly bars move at most to a neighbouring regime (a skip needs two changes within an hour).
    assert (np.abs(steps) <= 1).mean() > 0.999


def test_simulate_regimes_same_wall_clock_path_for_every_timeframe():
    config = SimulatedConfig(seed=11)
    hourly = simulate_regimes(config, TF_1H, 2000)
    minutely = simulate_regimes(config, TF_1M, 2000 * 60)
    np.testing.assert_array_equal(minutely[::60], hourly)
    np.testing.assert_array_equal(simulate_regimes(config, TF_1H, 500, start_index=700), hourly[700:1200])


def test_simulate_regimes_shorter_persistence_secs_switches_more_often():
    def switches(persistence_secs: float) -> int:
        config = SimulatedConfig(regime_persistence_secs=persistence_secs)
        return int((np.diff(simulate_regimes(config, TF_1H, 300_000)) != 0).sum())

    ratio = switches(1800.0) / switches(3600.0)
    assert 1.7 < ratio < 2.3


def test_simulate_regimes_mean_holding_time_matches_persistence():
    # 0.99 per hour -> mean ~99.5 h for quiet..active, shorter for volatile/extreme: between 70 h and 100 h.
    config = SimulatedConfig(regime_persistence=0.99, regime_persistence_secs=3600.0)
    regimes = simulate_regimes(config, TF_1H, 300_000)
    mean_run_hours = regimes.size / ((np.diff(regimes) != 0).sum() + 1)
    assert 70 < mean_run_hours < 100


def test_fetch_realized_volatility_ordered_by_regime():
    config = SimulatedConfig(n_bars=150_000)
    sim = SimulatedSource(config)
    bars = sim.fetch("AAA", None, None, TF_1H)
    regimes = sim.fetch_regimes(None, None, TF_1H)
    assert regimes["ts"].equals(bars["ts"])
    frame = pl.DataFrame({"regime": regimes["regime"], "r": log_returns(bars)})
    realized = frame.group_by("regime").agg(pl.col("r").std() * np.sqrt(365.25 * 24), pl.len())
    by_label = {row["regime"]: row["r"] for row in realized.iter_rows(named=True)}
    ordered = [by_label[r.label] for r in Regime]
    assert ordered == sorted(ordered)
    for regime in Regime:
        assert by_label[regime.label] == pytest.approx(config.regime_vols[regime.label], rel=0.1)


def test_fetch_volume_higher_in_volatile_regimes():
    sim = source(n_bars=50_000)
    bars = sim.fetch("AAA", None, None, TF_1H)
    regimes = sim.fetch_regimes(None, None, TF_1H)["regime"]
    volume = bars["volume"].to_numpy()
    means = [volume[(regimes == r.label).to_numpy()].mean() for r in Regime]
    assert means == sorted(means)


@pytest.mark.parametrize("timeframe", [TF_1M, TF_5M])
def test_fetch_volume_u_shaped_over_us_session(timeframe):
    bars = source(n_bars=60 * 86_400 // timeframe.seconds).fetch("AAA", None, None, timeframe)
    minute = bars.with_columns(tod=pl.col("ts").dt.hour().cast(pl.Int32) * 60 + pl.col("ts").dt.minute())

    def mean_volume(from_min: int, to_min: int) -> float:
        return minute.filter(pl.col("tod").is_between(from_min, to_min, closed="left"))["volume"].mean()  # type: ignore[return-value]

    at_open = mean_volume(14 * 60 + 30, 15 * 60)
    midday = mean_volume(17 * 60 + 30, 18 * 60)
    into_close = mean_volume(20 * 60 + 30, 21 * 60)
    overnight = mean_volume(2 * 60, 4 * 60)
    assert at_open > 1.5 * midday
    assert into_close > 1.2 * midday
    assert midday > overnight


def test_fetch_daily_bars_volume_near_base_volume():
    bars = source(n_bars=5000, base_volume=2_000_000.0).fetch("AAA", None, None, Timeframe.parse("1d"))
    # Daily bars average out the intraday profile; the regime mix lifts the mean a little above the base.
    assert 1_600_000 < bars["volume"].mean() < 2_600_000  # type: ignore[operator]


def test_build_source_simulated_returns_simulated_source():
    built = build_source("simulated", DataConfig(simulated=SimulatedConfig(n_bars=7)))
    assert built.name == "simulated"
    assert built.fetch("AAA", None, None, TF_1H).height == 7
