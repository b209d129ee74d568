"""One cost model, one set of fills: the RL env, the reference backtest and the paper broker agree on real data.

The parity convention is the env's: decide at bar t's close, fill at close_t, trade only when the target changes
(`simulate(fill_at="close", rebalance="on_change")`, `replay_decisions(fill_at="close", rebalance="on_change")`).
The live path's convention (fill at the next open, re-size every bar) is checked between the backtest and
`replay_decisions`' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.rl.config import EnvConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.ml.rl.market import market_arrays
from gpt_trader.trading.backtest import BacktestResult, BarArrays, simulate
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.replay import ReplayResult, replay_decisions

FRACTIONS = (-1.0, -0.5, 0.0, 0.3, 1.0)
CASH = 1_000_000.0
# Impact is made large enough to matter on these volumes (GOOGL: ~1e6 shares a day), so parity is not vacuous.
COSTS = CostModel(CostConfig(commission_bps=1.0, spread_bps=2.0, slippage_bps=0.5, impact_coef=2.0))
N_BARS = 500
SYMBOLS = ("SPX", "GOOGL")


@cache
def features(symbol: str) -> pl.DataFrame:
    """The last ~N_BARS bars of a bundled series with their features (rvol_20 is the impact sigma)."""
    bars = BundledSource().fetch(symbol, None, None, Timeframe.parse("1d"))
    frame = build_features(bars.tail(N_BARS + 80), FeaturesConfig()).tail(N_BARS)
    assert frame.height == N_BARS
    assert frame["rvol_20"].null_count() == 0
    return frame


def decisions(n: int, seed: int) -> list[float]:
    """A seeded, persistent walk over FRACTIONS (about one change in three bars); the last bar repeats."""
    rng = np.random.default_rng(seed)
    out = [0.0]
    for _ in range(n - 1):
        out.append(float(rng.choice(FRACTIONS)) if rng.random() < 0.35 else out[-1])
    out[-1] = out[-2]  # the env never acts on its last bar
    return out


def bar_list(frame: pl.DataFrame) -> list[Bar]:
    return [
        Bar(r["ts"], r["symbol"], r["source"], r["open"], r["high"], r["low"], r["close"], r["volume"])
        for r in frame.iter_rows(named=True)
    ]


@dataclass
class EnvRun:
    trades: list  # EnvTrade
    equity_after_step: list[float]
    final_equity: float
    costs_paid: float


def run_env(frame: pl.DataFrame, targets: list[float], costs: CostModel, *, leverage: float = 2.0) -> EnvRun:
    # Leverage 2 keeps the env's cash floor from ever cutting a buy of |target| <= 1 (the broker has no floor).
    market = market_arrays(frame, ["ret_1", "rvol_20"])
    config = EnvConfig(window_size=1, position_fractions=FRACTIONS, max_gross_leverage=leverage, initial_cash_usd=CASH)
    env = TradingEnv(market, env_config=config, cost_model=costs)
    env.reset(seed=0)
    equity = []
    info: dict = {}
    for t in range(len(targets) - 1):
        _, _, terminated, truncated, info = env.step(FRACTIONS.index(targets[t]))
        equity.append(info["equity"])
        assert not terminated
    assert truncated
    return EnvRun(list(env.trades), equity, info["equity"], info["costs_paid"])


def run_backtest(frame: pl.DataFrame, targets: list[float], costs: CostModel, **kw: object) -> BacktestResult:
    options = {"fill_at": "close", "rebalance": "on_change", **kw}
    return simulate(BarArrays.from_frame(frame), targets, costs, initial_cash=CASH, **options)  # type: ignore[arg-type]


def run_replay(frame: pl.DataFrame, targets: list[float], costs: CostModel, **kw: object) -> ReplayResult:
    options = {"fill_at": "close", "rebalance": "on_change", **kw}
    return replay_decisions(
        bar_list(frame),
        targets,
        costs,
        initial_cash=Decimal(int(CASH)),
        sigma=frame["rvol_20"].to_list(),
        use_volume=True,
        **options,  # type: ignore[arg-type]
    )


def replay_costs(result: ReplayResult, frame: pl.DataFrame, mid_column: str) -> float:
    """(fill − mid) · signed quantity + commission, summed over the broker's fills."""
    mids = dict(zip(frame["ts"].to_list(), frame[mid_column].to_list(), strict=True))
    return sum(
        float((f.price - Decimal(repr(mids[f.ts]))) * f.quantity * f.side.sign + f.commission) for f in result.fills
    )


def assert_same_fills(sim: BacktestResult, rep: ReplayResult, frame: pl.DataFrame, *, lots: float = 1.0) -> None:
    """Same bars, shares (1e-9 relative, or `lots` broker lots of 1e-9 shares), fill prices and commissions."""
    index = {ts: i for i, ts in enumerate(frame["ts"].to_list())}
    assert len(rep.fills) == len(sim.trades)
    for trade, fill in zip(sim.trades, rep.fills, strict=True):
        assert index[fill.ts] == trade.bar
        # The broker's quantities are whole 1e-9 lots in Decimal; float truncation may land a lot away.
        assert float(fill.quantity) * fill.side.sign == pytest.approx(trade.shares, rel=1e-9, abs=lots * 1e-9)
        if abs(trade.shares) >= 1.0:
            assert float(fill.price) == pytest.approx(trade.fill_price, rel=1e-12)
        else:
            # A trade of a few lots (every-bar drift): one lot more doubles its participation, so its impact
            # differs visibly, but by less than a nano-dollar on the trade.
            assert abs(float(fill.price) - trade.fill_price) * abs(trade.shares) < 1e-9
        assert float(fill.commission) == pytest.approx(trade.commission, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_env_backtest_and_broker_fill_identically_on_real_bars(symbol: str) -> None:
    frame = features(symbol)
    targets = decisions(frame.height, seed=11)
    env = run_env(frame, targets, COSTS)
    sim = run_backtest(frame, targets, COSTS)
    rep = run_replay(frame, targets, COSTS)

    changes = sum(a != b for a, b in zip([0.0, *targets[:-1]], targets, strict=True))
    assert len(sim.trades) == changes > 100
    # env vs backtest: the same bar, shares, participation and sigma, hence the same fill and commission.
    assert len(env.trades) == len(sim.trades)
    for e, s in zip(env.trades, sim.trades, strict=True):
        assert e.t == s.bar == s.decision_bar
        assert e.price == s.mid
        assert e.shares == pytest.approx(s.shares, rel=1e-9)
        assert e.participation == pytest.approx(s.participation, rel=1e-9)
        assert e.sigma == s.sigma
        assert COSTS.fill_price(e.price, e.shares, e.participation, e.sigma) == pytest.approx(s.fill_price, rel=1e-12)
        assert e.cost == pytest.approx(s.cost, rel=1e-9)
    # backtest vs paper broker + portfolio.
    assert_same_fills(sim, rep, frame)
    impact = [s.participation for s in sim.trades]
    assert max(impact) > 0  # participation (and so square-root impact) is really in play

    # Equity: per bar (broker vs backtest), per step (env vs backtest: marked at close_{t+1} before its trade).
    np.testing.assert_allclose([float(e) for e in rep.equity], sim.equity, rtol=0, atol=1e-4)
    before_trade = sim.cash[:-1] + sim.shares[:-1] * BarArrays.from_frame(frame).close[1:]
    np.testing.assert_allclose(env.equity_after_step, before_trade, rtol=0, atol=1e-4)
    assert abs(env.final_equity - sim.final_equity) < 1e-4
    assert abs(float(rep.pnl) - sim.pnl) < 1e-4
    assert round(env.final_equity, 2) == round(sim.final_equity, 2) == round(float(rep.portfolio.equity()), 2)
    # Total costs paid beyond the mid (spread + slippage + impact + commission).
    assert sim.total_cost > 0
    assert env.costs_paid == pytest.approx(sim.total_cost, rel=1e-9)
    assert replay_costs(rep, frame, "close") == pytest.approx(sim.total_cost, rel=1e-9)


@pytest.mark.parametrize(
    "change", [{"commission_bps": 3.0}, {"spread_bps": 6.0}, {"slippage_bps": 2.0}, {"impact_coef": 6.0}]
)
def test_changing_a_cost_parameter_moves_all_three_by_the_same_amount(change: dict[str, float]) -> None:
    frame = features("GOOGL")
    targets = decisions(frame.height, seed=5)
    dearer = CostModel(COSTS.config.model_copy(update=change))
    finals = {}
    for name, costs in (("base", COSTS), ("dearer", dearer)):
        finals[name] = (
            run_env(frame, targets, costs).final_equity,
            run_backtest(frame, targets, costs).final_equity,
            float(run_replay(frame, targets, costs).portfolio.equity()),
        )
    moves = [dear - base for base, dear in zip(finals["base"], finals["dearer"], strict=True)]
    assert moves[1] < -100.0  # costs really moved P&L (dollars on $1M)
    assert moves[0] == pytest.approx(moves[1], abs=1e-4)
    assert moves[2] == pytest.approx(moves[1], abs=1e-4)


def test_env_cash_floor_at_default_leverage_matches_backtest_with_the_same_floor() -> None:
    frame = features("SPX")
    targets = decisions(frame.height, seed=3)
    env = run_env(frame, targets, COSTS, leverage=1.0)
    sim = run_backtest(frame, targets, COSTS, max_gross_leverage=1.0)
    free = run_backtest(frame, targets, COSTS)
    assert len(env.trades) == len(sim.trades)
    for e, s in zip(env.trades, sim.trades, strict=True):
        assert e.t == s.bar
        assert e.shares == pytest.approx(s.shares, rel=1e-9)
    assert abs(env.final_equity - sim.final_equity) < 1e-4
    # The floor binds (full-long buys are cut by their cost), so the no-floor backtest differs.
    cut = [s for s, f in zip(sim.trades, free.trades, strict=True) if s.shares != pytest.approx(f.shares, rel=1e-12)]
    assert cut


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("rebalance", ["every_bar", "on_change"])
def test_next_open_backtest_matches_paper_broker_replay(symbol: str, rebalance: str) -> None:
    frame = features(symbol)
    targets = decisions(frame.height, seed=17)
    # The broker trades whole 1e-9 lots: at target 1 the every-bar re-size is often sub-lot drift it skips.
    sim = run_backtest(frame, targets, COSTS, fill_at="next_open", rebalance=rebalance, lot_size=1e-9)
    if rebalance == "every_bar":
        rep = replay_decisions(  # the defaults: fill at the next open, re-size every bar
            bar_list(frame),
            targets,
            COSTS,
            initial_cash=Decimal(int(CASH)),
            sigma=frame["rvol_20"].to_list(),
            use_volume=True,
        )
    else:
        rep = run_replay(frame, targets, COSTS, fill_at="next_open", rebalance=rebalance)
    # Re-sizing every bar makes many tiny drift trades; the target and the trade are each truncated to lots, in
    # Decimal by the broker and in float here, so quantities may differ by a few lots.
    assert_same_fills(sim, rep, frame, lots=5.0)
    for trade in sim.trades:
        assert trade.bar == trade.decision_bar + 1
        assert trade.mid == frame["open"][trade.bar]
    np.testing.assert_allclose([float(e) for e in rep.equity], sim.equity, rtol=0, atol=1e-4)
    assert abs(float(rep.pnl) - sim.pnl) < 1e-4
    assert replay_costs(rep, frame, "open") == pytest.approx(sim.total_cost, rel=1e-9)
