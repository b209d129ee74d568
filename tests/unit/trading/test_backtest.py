"""The reference backtest's conventions: sizing, fill timing, rebalancing, costs and the equity curve."""

from __future__ import annotations

import numpy as np
import pytest

from gpt_trader.trading.backtest import BarArrays, simulate
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel

COSTS = CostModel(CostConfig(commission_bps=1.0, spread_bps=4.0, slippage_bps=1.0, impact_coef=0.2))
FREE = CostModel(CostConfig(commission_bps=0, spread_bps=0, slippage_bps=0, impact_coef=0))


def make_bars(n: int = 50, seed: int = 1, volume: float | None = 1e5) -> BarArrays:
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, n)).astype(np.float64)
    open_ = close * (1 + rng.normal(0, 0.002, n))
    return BarArrays(
        ts=np.arange(n).astype("datetime64[D]"),
        open=open_,
        close=close,
        volume=None if volume is None else np.full(n, volume),
        sigma=np.full(n, 0.01),
    )


def test_simulate_buy_and_hold_without_costs_tracks_the_price():
    bars = make_bars()
    result = simulate(bars, np.ones(len(bars)), FREE, initial_cash=1_000.0)
    assert len(result.trades) == 1
    np.testing.assert_allclose(result.equity, 1_000.0 * bars.close / bars.close[0], rtol=1e-12)
    assert result.shares[0] == pytest.approx(1_000.0 / bars.close[0])


def test_simulate_on_change_holds_shares_between_changes():
    bars = make_bars()
    targets = np.array([0.0] * 5 + [0.5] * 20 + [-1.0] * 25)
    result = simulate(bars, targets, COSTS, rebalance="on_change")
    assert [t.bar for t in result.trades] == [5, 25]
    assert np.all(result.shares[5:25] == result.shares[5])
    assert result.shares[5] == pytest.approx(0.5 * result.equity[4] / bars.close[5])
    np.testing.assert_allclose(result.equity, result.cash + result.shares * bars.close)


def test_simulate_every_bar_resizes_drifted_weight_to_target():
    bars = make_bars()
    result = simulate(bars, np.full(len(bars), 0.5), COSTS, rebalance="every_bar")
    assert len(result.trades) == len(bars)
    weights = result.shares * bars.close / result.equity
    np.testing.assert_allclose(weights, 0.5, rtol=1e-3)


def test_simulate_trade_costs_equal_the_cost_models_rate():
    bars = make_bars()
    result = simulate(bars, np.tile([1.0, -0.5], 25), COSTS)
    for trade in result.trades:
        assert trade.participation == pytest.approx(abs(trade.shares) / 1e5)
        rate = COSTS.cost_rate(trade.participation, trade.sigma)
        assert trade.cost == pytest.approx(trade.notional * rate, rel=1e-9)
        assert trade.fill_price == COSTS.fill_price(trade.mid, trade.shares, trade.participation, trade.sigma)
    assert result.total_cost == pytest.approx(sum(t.cost for t in result.trades))
    # Equity lost to costs: the same path without costs ends richer by at least the costs paid (compounding aside).
    free = simulate(bars, np.tile([1.0, -0.5], 25), FREE)
    assert free.final_equity > result.final_equity
    assert result.pnl == pytest.approx(result.final_equity - 100_000.0)


def test_simulate_next_open_fills_at_the_following_open_and_drops_the_last_target():
    bars = make_bars(10)
    targets = np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 1.0])
    result = simulate(bars, targets, COSTS, fill_at="next_open")
    assert [(t.decision_bar, t.bar) for t in result.trades] == [(1, 2), (3, 4)]
    first = result.trades[0]
    assert first.mid == bars.open[2]
    assert first.sigma == bars.sigma[1]
    # Sized at the decision with what was known: equity and price at close_1.
    assert first.shares == pytest.approx(result.equity[1] / bars.close[1])
    assert result.shares[-1] == 0.0


def test_simulate_zero_target_closes_exactly_and_volume_conventions():
    bars = make_bars(6, volume=None)
    result = simulate(bars, [1, 1, 0, 0, -1, -1], COSTS)
    assert result.shares[2] == 0.0
    assert all(t.participation == 0.0 for t in result.trades)  # volume unknown: no participation
    zero_volume = BarArrays(bars.ts, bars.open, bars.close, np.zeros(6), bars.sigma)
    assert all(t.participation == 1.0 for t in simulate(zero_volume, [1, 1, 0, 0, -1, -1], COSTS).trades)


def test_simulate_leverage_floor_cuts_buys_by_their_cost():
    bars = make_bars()
    result = simulate(bars, np.ones(len(bars)), COSTS, max_gross_leverage=1.0)
    assert 0.0 <= result.cash[0] < 0.1  # at the floor, less the smaller impact of the smaller buy
    assert np.all(result.cash >= -1e-6)
    uncut = simulate(bars, np.ones(len(bars)), COSTS)
    assert uncut.cash[0] < 0 < result.trades[0].shares < uncut.trades[0].shares


def test_simulate_lot_size_skips_sub_lot_trades():
    bars = make_bars()
    result = simulate(bars, np.ones(len(bars)), COSTS, rebalance="every_bar", lot_size=1.0)
    assert all(float(t.shares).is_integer() for t in result.trades)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"targets": [0.0]}, "bars but"),
        ({"fill_at": "open"}, "fill_at"),
        ({"rebalance": "weekly"}, "rebalance"),
        ({"targets": [np.nan] * 5}, "finite"),
        ({"lot_size": -1.0}, "lot_size"),
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"targets": [0.0] * 5, **kwargs}
    targets = args.pop("targets")
    with pytest.raises(ValueError, match=match):
        simulate(make_bars(5), targets, COSTS, **args)


def test_bar_arrays_reject_misaligned_arrays():
    bars = make_bars(5)
    with pytest.raises(ValueError, match="differ in length"):
        BarArrays(bars.ts, bars.open[:4], bars.close, bars.volume, bars.sigma)
