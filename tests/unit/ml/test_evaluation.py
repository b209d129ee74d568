from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt_trader.ml.evaluation import (
    buy_and_hold,
    detectable_accuracy,
    diebold_mariano,
    directional_accuracy,
    information_coefficient,
    performance,
    periods_per_year,
    strategy_returns,
    time_splits,
    walk_forward_splits,
)
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel

FREE = CostModel(CostConfig(commission_bps=0, spread_bps=0, slippage_bps=0, impact_coef=0))


def test_time_splits_embargo_separates_windows():
    s = time_splits(1000, train_frac=0.6, val_frac=0.2, embargo=10)
    assert (s.train.stop, s.val.start, s.val.stop, s.test.start, s.test.stop) == (600, 610, 810, 820, 1000)


@given(
    n_folds=st.integers(1, 6),
    test_size=st.integers(5, 50),
    embargo=st.integers(0, 10),
    val_size=st.integers(0, 30),
    expanding=st.booleans(),
)
def test_walk_forward_splits_never_train_on_future(n_folds, test_size, embargo, val_size, expanding):
    n = 100 + n_folds * test_size + val_size + 2 * embargo
    folds = walk_forward_splits(
        n,
        n_folds=n_folds,
        test_size=test_size,
        min_train=80,
        embargo=embargo,
        val_size=val_size,
        expanding=expanding,
    )
    assert len(folds) == n_folds
    for k, f in enumerate(folds):
        assert f.train.stop + (embargo if val_size else 0) <= f.val.start or not val_size
        assert (f.val.stop if val_size else f.train.stop) + embargo <= f.test.start
        assert len(f.train) >= 80 or expanding
        if k:
            assert folds[k - 1].test.stop == f.test.start
    assert folds[-1].test.stop == n


def test_walk_forward_splits_too_short_raises():
    with pytest.raises(ValueError, match="cannot hold"):
        walk_forward_splits(100, n_folds=5, test_size=20, min_train=50, embargo=5)


def test_directional_accuracy_counts_only_nonzero_calls_and_moves():
    pred = np.array([1, -1, 0, 1, 1, -1, 1])
    real = np.array([0.5, -0.2, 0.3, -0.1, 0.0, -0.4, 0.2])
    stats = directional_accuracy(pred, real)
    assert (stats.n_calls, stats.hits) == (5, 4)
    assert stats.accuracy == pytest.approx(0.8)
    assert stats.ci_low < 0.8 < stats.ci_high


def test_directional_accuracy_perfect_large_sample_significant_coin_not():
    rng = np.random.default_rng(0)
    real = rng.normal(size=2000)
    assert directional_accuracy(np.sign(real), real).p_value_vs_half < 1e-100
    coin = directional_accuracy(rng.choice([-1, 1], size=2000), real)
    assert coin.p_value_vs_half > 0.01
    assert 0.45 < coin.accuracy < 0.55


def test_directional_accuracy_majority_baseline_is_harder_than_coin():
    real = np.r_[np.ones(70), -np.ones(30)]
    always_up = directional_accuracy(np.ones(100), real)
    assert always_up.accuracy == pytest.approx(0.7)
    assert always_up.p_value_vs_half < 0.001
    assert always_up.p_value_vs_majority > 0.4


def test_detectable_accuracy_shrinks_with_sample_size():
    # About 2,500 calls are needed to detect a 52.5% hit rate; daily series of ~1,000 test calls cannot.
    assert detectable_accuracy(1000) == pytest.approx(0.539, abs=0.002)
    assert detectable_accuracy(10_000) == pytest.approx(0.5125, abs=0.001)
    assert detectable_accuracy(1000) > detectable_accuracy(5000)


def test_information_coefficient_rank_correlation():
    x = np.arange(50.0)
    assert information_coefficient(x, x**3)[0] == pytest.approx(1.0)
    assert information_coefficient(x, -x)[0] == pytest.approx(-1.0)
    assert information_coefficient(np.zeros(50), x) == (0.0, 1.0)


def test_diebold_mariano_better_forecast_negative_and_significant():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    good = y + rng.normal(scale=0.3, size=500)
    bad = rng.normal(size=500)
    stat, p = diebold_mariano((y - good) ** 2, (y - bad) ** 2)
    assert stat < 0
    assert p < 1e-6
    stat_same, p_same = diebold_mariano((y - good) ** 2, (y - good) ** 2)
    assert (stat_same, p_same) == (0.0, 1.0)


def test_strategy_returns_position_earns_next_return_minus_costs():
    costs = CostModel(CostConfig(commission_bps=10, spread_bps=0, slippage_bps=0, impact_coef=0))
    net, paid = strategy_returns([1, 1, -1, 0], [0.01, -0.02, -0.03, 0.05], costs)
    assert np.allclose(paid, [1e-3, 0, 2e-3, 1e-3])
    assert np.allclose(net, [0.01 - 1e-3, -0.02, 0.03 - 2e-3, -1e-3])


def test_strategy_returns_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        strategy_returns([1, math.nan], [0.1, 0.2], FREE)


def test_performance_known_series():
    r = np.array([0.1, -0.5, 0.2, 0.0])
    perf = performance(r, 252, positions=np.array([1, 1, 1, 0]))
    assert perf.total_return == pytest.approx(1.1 * 0.5 * 1.2 - 1)
    assert perf.max_drawdown == pytest.approx(0.5)
    assert perf.win_rate == pytest.approx(2 / 3)
    assert perf.turnover == pytest.approx(2 * 252 / 4)
    assert perf.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))


def test_costs_never_improve_performance():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, 300)
    w = np.sign(rng.normal(size=300))
    free = performance(strategy_returns(w, r, FREE)[0], 252)
    paid = performance(strategy_returns(w, r, CostModel())[0], 252)
    assert paid.total_return < free.total_return
    assert paid.sharpe < free.sharpe


def test_buy_and_hold_pays_entry_once():
    perf = buy_and_hold(np.full(10, 0.01), CostModel(), 252)
    assert perf.total_return == pytest.approx(1.01**10 * (1 - CostModel().cost_rate()) - 1, rel=1e-3)


def test_periods_per_year_daily_weekdays():
    start = datetime(2020, 1, 1, tzinfo=UTC)
    days = [start + timedelta(days=i) for i in range(730) if (start + timedelta(days=i)).weekday() < 5]
    assert periods_per_year(days) == pytest.approx(261, abs=2)


# --- signal evaluation, baseline and report helpers ---


def test_wilson_interval_two_sided_contains_rate_and_matches_scipy():
    from scipy.stats import binomtest

    from gpt_trader.ml.evaluation import wilson_interval

    low, high = wilson_interval(540, 1000)
    ci = binomtest(540, 1000).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert low < 0.54 < high < 1
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_classical_baseline_separable_labels_predicted():
    from gpt_trader.ml.evaluation import classical_baseline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.where(x[:, 0] > 0.3, 1, np.where(x[:, 0] < -0.3, -1, 0))
    labels, probs = classical_baseline(x[:300], y[:300], x[300:])
    assert np.mean(labels == y[300:]) > 0.85
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_classical_baseline_single_class_predicts_it():
    from gpt_trader.ml.evaluation import classical_baseline

    labels, probs = classical_baseline(np.ones((5, 2)), np.ones(5), np.zeros((3, 2)))
    assert labels.tolist() == [1, 1, 1]
    assert probs[:, 2].tolist() == [1.0, 1.0, 1.0]


def test_evaluate_signals_perfect_foresight_scores_and_earns():
    from gpt_trader.ml.evaluation import evaluate_signals

    rng = np.random.default_rng(1)
    realized = rng.normal(0, 0.01, 500)
    out = evaluate_signals(np.sign(realized), realized, np.expm1(realized), FREE, 252, forecast=realized)
    assert out["direction_accuracy"] == 1.0
    assert out["direction_n_calls"] == 500
    assert out["ic"] == pytest.approx(1.0)
    assert out["dm_stat"] < 0  # the perfect forecast beats the zero forecast
    assert out["strategy_sharpe"] > 10
    assert out["direction_ci95_high"] == pytest.approx(1.0)


def test_evaluate_signals_missing_rows_dropped():
    from gpt_trader.ml.evaluation import evaluate_signals

    realized = np.array([0.01, -0.02, np.nan, 0.03])
    out = evaluate_signals(np.array([1, -1, 1, 1]), realized, np.array([0.01, -0.02, 0.0, np.nan]), FREE, 252)
    assert out["n_rows"] == 2
    assert "ic" not in out


def test_markdown_table_formats_floats_and_missing_cells():
    from gpt_trader.ml.evaluation import markdown_table

    table = markdown_table([{"a": 0.123456, "b": "x"}, {"a": float("nan")}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 0.1235 | x |", "| nan |  |"]


def test_directional_accuracy_ci_is_two_sided():
    real = np.r_[np.ones(540), -np.ones(460)]
    stats = directional_accuracy(np.ones(1000), real)
    assert stats.ci_high < 1.0
    assert (stats.ci_low, stats.ci_high) == pytest.approx((0.509, 0.571), abs=0.001)
