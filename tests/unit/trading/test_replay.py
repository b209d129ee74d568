"""Cost-model parity between the vectorized backtest (`strategy_returns`) and the paper broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from gpt_trader.core.types import Bar
from gpt_trader.ml.evaluation import strategy_returns
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.replay import replay_decisions
from gpt_trader.trading.types import cents, to_decimal

COSTS = CostModel(CostConfig(commission_bps=1.0, spread_bps=4.0, slippage_bps=1.0, impact_coef=0.2))
CASH = Decimal(100_000)


def continuous_bars(n: int, seed: int = 7) -> list[Bar]:
    """Bars whose open is the previous close, so a decision at close t fills at close t's price."""
    rng = np.random.default_rng(seed)
    closes = 100 * np.cumprod(1 + rng.normal(0, 0.01, n))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    opens = [100.0, *closes[:-1]]
    return [
        Bar(start + timedelta(hours=i), "AAPL", "test", float(o), max(o, c), min(o, c), float(c), 50_000.0 + 10 * i)
        for i, (o, c) in enumerate(zip(opens, closes, strict=True))
    ]


def targets(n: int, seed: int = 3) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(rng.choice([-1.0, -0.5, 0.0, 0.3, 0.8, 1.0], size=n))


def test_replay_each_bar_pnl_equals_strategy_returns_to_the_cent():
    bars, w = continuous_bars(60), targets(60)
    sigma = [0.01 + 0.0001 * i for i in range(60)]
    result = replay_decisions(bars, w, COSTS, initial_cash=CASH, sigma=sigma, use_volume=True)
    closes = np.array([b.close for b in bars])
    r_next = closes[1:] / closes[:-1] - 1
    assert len(result.fills) > 30
    for t in range(len(bars) - 1):
        # strategy_returns' own definition, starting from the weight the broker actually held before trading.
        net, _ = strategy_returns(
            np.array([w[t]]),
            np.array([r_next[t]]),
            COSTS,
            participation=result.participation[t],
            sigma=sigma[t],
            initial_position=result.pre_trade_weights[t],
        )
        expected = result.equity[t] * to_decimal(float(1 + net[0]))
        assert cents(result.equity[t + 1]) == cents(expected), f"bar {t}"


def test_replay_total_pnl_matches_vectorized_backtest_up_to_drift_costs():
    bars, w = continuous_bars(80, seed=11), targets(80, seed=5)
    result = replay_decisions(bars, w, COSTS, initial_cash=CASH)
    closes = np.array([b.close for b in bars])
    net, _ = strategy_returns(np.array(w[:-1]), closes[1:] / closes[:-1] - 1, COSTS)
    backtest_pnl = float(CASH) * (np.prod(1 + net) - 1)
    # The backtest charges |w_t - w_{t-1}|; the broker trades from the drifted weight it holds. The gap is the
    # cost of that drift and nothing else.
    drift = np.abs(np.array(result.pre_trade_weights) - np.concatenate([[0.0], w[:-2]]))
    equity = np.array([float(e) for e in result.equity[:-1]])
    bound = float(np.sum(drift * equity)) * COSTS.cost_rate() * 1.05
    assert abs(float(result.pnl) - backtest_pnl) <= bound
    assert bound < 1e-3 * float(CASH)


def test_replay_without_costs_or_drift_matches_backtest_exactly():
    bars = continuous_bars(40, seed=2)
    w = [1.0] * 40  # fully invested: no drift away from the target, so no rebalancing either
    free = CostModel(CostConfig(commission_bps=0, spread_bps=0, slippage_bps=0, impact_coef=0))
    result = replay_decisions(bars, w, free, initial_cash=CASH)
    closes = np.array([b.close for b in bars])
    net, _ = strategy_returns(np.array(w[:-1]), closes[1:] / closes[:-1] - 1, free)
    assert float(cents(result.pnl)) == pytest.approx(float(CASH) * (np.prod(1 + net) - 1), abs=0.01)


def test_replay_length_mismatch_raises():
    with pytest.raises(ValueError, match="bars but"):
        replay_decisions(continuous_bars(3), [0.0], COSTS)


def test_replay_at_close_on_change_fills_at_the_deciding_close_and_matches_simulate():
    from gpt_trader.trading.backtest import BarArrays, simulate

    bars = continuous_bars(60, seed=4)
    w = [0.0] * 3 + [float(x) for x in np.repeat(targets(19, seed=9), 3)][:57]
    sigma = [0.01] * 60
    result = replay_decisions(
        bars, w, COSTS, initial_cash=CASH, sigma=sigma, use_volume=True, fill_at="close", rebalance="on_change"
    )
    arrays = BarArrays(
        ts=np.array([b.ts for b in bars]),
        open=np.array([b.open for b in bars]),
        close=np.array([b.close for b in bars]),
        volume=np.array([b.volume for b in bars]),
        sigma=np.array(sigma),
    )
    sim = simulate(arrays, w, COSTS, initial_cash=float(CASH), fill_at="close", rebalance="on_change")
    changes = [t for t in range(60) if w[t] != (w[t - 1] if t else 0.0)]
    assert [bars.index(next(b for b in bars if b.ts == f.ts)) for f in result.fills] == changes
    assert [t.bar for t in sim.trades] == changes
    for fill, trade in zip(result.fills, sim.trades, strict=True):
        assert float(fill.price) == pytest.approx(trade.fill_price, rel=1e-12)
        assert float(fill.quantity) * fill.side.sign == pytest.approx(trade.shares, rel=1e-9)
    assert len(result.equity) == 60
    np.testing.assert_allclose([float(e) for e in result.equity], sim.equity, rtol=0, atol=1e-6)


def test_replay_rejects_unknown_conventions():
    with pytest.raises(ValueError, match="fill_at"):
        replay_decisions(continuous_bars(3), [0.0] * 3, COSTS, fill_at="open")
    with pytest.raises(ValueError, match="rebalance"):
        replay_decisions(continuous_bars(3), [0.0] * 3, COSTS, rebalance="weekly")
