"""Replay target positions through `PaperBroker` and `Portfolio`: the broker-side twin of the backtest.

Timing is the live path's: the decision at bar t uses its close, and the order fills at the next price the
broker sees, bar t+1's open. Sizing is notional-based with fractional quantities (lot 1e-9, Alpaca's finest):
quantity = w_t · equity_t / close_t. With open_{t+1} = close_t this earns exactly what
`gpt_trader.ml.evaluation.strategy_returns` books for holding w_t over r_{t+1}, with costs from the same
`CostModel` on the traded notional. The one accounting difference from the vectorized backtest is drift: the
backtest charges turnover |w_t − w_{t−1}|, the broker trades from the drifted weight it actually holds
(`pre_trade_weights`), which this result exposes so the two can be compared exactly.

`fill_at` and `rebalance` take the conventions of `gpt_trader.trading.backtest.simulate` (the reference):
the defaults ("next_open", "every_bar") are the live path above; ("close", "on_change") is the RL env's
convention: the order is submitted at bar t's close and the broker is handed close_t at once, and only a
changed target trades.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from gpt_trader.core.types import Bar
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker, make_client_order_id
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.sizing import order_quantity
from gpt_trader.trading.types import Fill, Order, Side, to_decimal

FRACTIONAL_LOT = Decimal("1e-9")


@dataclass(slots=True)
class ReplayResult:
    """Fills, the equity after each bar's close, and per-decision details for parity checks."""

    portfolio: Portfolio
    fills: list[Fill] = field(default_factory=list)
    equity: list[Decimal] = field(default_factory=list)
    pre_trade_weights: list[float] = field(default_factory=list)
    participation: list[float] = field(default_factory=list)

    @property
    def pnl(self) -> Decimal:
        """Final equity minus initial cash."""
        return self.portfolio.equity() - self.portfolio.initial_cash


def replay_decisions(
    bars: Sequence[Bar],
    target_positions: Sequence[float],
    cost_model: CostModel,
    *,
    initial_cash: Decimal = Decimal(100_000),
    sigma: Sequence[float] | float = 0.0,
    use_volume: bool = False,
    lot_size: Decimal = FRACTIONAL_LOT,
    strategy: str = "replay",
    fill_at: Literal["close", "next_open"] = "next_open",
    rebalance: Literal["on_change", "every_bar"] = "every_bar",
) -> ReplayResult:
    """Trade `target_positions[t]` (fraction of equity, decided at bar t's close) through a paper broker.

    With `fill_at="next_open"` the order fills at bar t+1's open and the last bar's target is ignored; with
    "close" it fills at close_t. `sigma` (the deciding bar's) and, with `use_volume`, participation =
    quantity / the fill bar's volume feed the cost model's impact term. `rebalance="on_change"` trades only when
    the target differs from the previous bar's (starting from 0).
    """
    if len(bars) != len(target_positions):
        raise ValueError(f"{len(bars)} bars but {len(target_positions)} target positions")
    if fill_at not in ("close", "next_open"):
        raise ValueError(f"fill_at must be 'close' or 'next_open', got {fill_at!r}")
    if rebalance not in ("on_change", "every_bar"):
        raise ValueError(f"rebalance must be 'on_change' or 'every_bar', got {rebalance!r}")
    sigmas = [float(sigma)] * len(bars) if isinstance(sigma, int | float) else [float(s) for s in sigma]
    broker = PaperBroker(cost_model, initial_cash=initial_cash)
    portfolio = Portfolio(initial_cash)
    result = ReplayResult(portfolio)
    at_close = fill_at == "close"

    def fill_at_price(bar: Bar, price: float, decision: int) -> None:
        volume = bar.volume if use_volume else None
        for fill in broker.on_price(bar.symbol, price, bar.ts, volume=volume, sigma=sigmas[decision]):
            portfolio.apply_fill(fill)
            result.fills.append(fill)
            result.participation[-1] = float(fill.quantity) / volume if volume else 0.0

    previous_target = 0.0
    for t, bar in enumerate(bars):
        if t > 0 and not at_close:
            fill_at_price(bar, bar.open, t - 1)
        close = to_decimal(bar.close)
        portfolio.mark(bar.symbol, close)
        if not at_close:
            portfolio.record_equity(bar.ts)
            result.equity.append(portfolio.equity())
            if t == len(bars) - 1:
                break
        equity = portfolio.equity()
        held = portfolio.quantity(bar.symbol)
        result.pre_trade_weights.append(float(held * close / equity) if equity else 0.0)
        result.participation.append(0.0)
        target = float(target_positions[t])
        changed = target != previous_target
        previous_target = target
        qty = order_quantity(target, held, equity, close, lot_size=lot_size)
        if qty != 0 and (rebalance == "every_bar" or changed):
            broker.submit(
                Order(
                    client_order_id=make_client_order_id(strategy, bar.symbol, bar.ts),
                    symbol=bar.symbol,
                    side=Side.BUY if qty > 0 else Side.SELL,
                    quantity=abs(qty),
                    ts=bar.ts,
                )
            )
        if at_close:
            fill_at_price(bar, bar.close, t)
            portfolio.mark(bar.symbol, close)
            portfolio.record_equity(bar.ts)
            result.equity.append(portfolio.equity())
    return result
