"""The reference backtest: cash and shares, one record per fill, every cost through the one `CostModel`.

This is the semantics the RL environment and the paper broker are held to (tests/model/test_cost_parity.py).

Conventions:
- `targets[t]` is a fraction of equity (negative = short), decided with bar t's close.
- Sizing happens at the decision, with what is known then: equity_t = cash + shares · close_t and
  shares_target = targets[t] · equity_t / close_t (fractional shares); the trade is shares_target − shares, and
  a target of 0 closes the position exactly. With `lot_size` > 0 the target and the trade are rounded toward
  zero to whole lots, as `replay_decisions` does (its lot is 1e-9 shares), so sub-lot drift is not traded.
- `fill_at="close"`: the trade fills at close_t, so the mid is the sizing price (the RL env's convention).
  `fill_at="next_open"`: it fills at open_{t+1} (the live path and `replay_decisions`' default); the last bar's
  target has no later price and is ignored.
- `rebalance="on_change"`: trade only when targets[t] differs from the previous decision's target (the book
  starts flat, target 0): the env's "choosing the held action is a hold". `rebalance="every_bar"`: re-size to the
  target at every decision, so a held weight that drifted with the price is traded back (`replay_decisions`'
  default).
- Prices and costs, exactly as `PaperBroker.on_price`: fill = `CostModel.fill_price(mid, shares, participation,
  sigma)`, commission = `CostModel.commission(|shares| · mid)`, participation = |shares| / volume of the fill bar
  (a bar with volume <= 0 counts as full participation, as in the env; no volume at all means participation 0),
  sigma = the decision bar's sigma (e.g. `rvol_20`).
- cash −= shares · fill + commission; equity[t] = cash + shares · close_t after bar t's fill.
- `max_gross_leverage` (optional, the env's rule): a buy is cut so that cash − price − cost stays at or above
  −(max_gross_leverage − 1) · equity at the fill.

The trading decisions are sequential (sizing depends on equity), so the loop runs over the bars that trade only;
cash, shares and equity per bar are then built with vectorized cumulative sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gpt_trader.trading.costs import CostModel

FloatArray = npt.NDArray[np.float64]
FillAt = Literal["close", "next_open"]
Rebalance = Literal["on_change", "every_bar"]


@dataclass(frozen=True, slots=True)
class BarArrays:
    """One asset's bars as aligned arrays: timestamps, open, close, volume (None = unknown) and per-bar sigma."""

    ts: npt.NDArray[Any]
    open: FloatArray
    close: FloatArray
    volume: FloatArray | None
    sigma: FloatArray

    def __post_init__(self) -> None:
        n = len(self.close)
        arrays = {"ts": self.ts, "open": self.open, "sigma": self.sigma}
        if self.volume is not None:
            arrays["volume"] = self.volume
        wrong = {k: len(v) for k, v in arrays.items() if len(v) != n}
        if wrong:
            raise ValueError(f"bar arrays differ in length from close ({n}): {wrong}")
        if not (np.all(self.close > 0) and np.all(self.open > 0)):
            raise ValueError("open and close prices must be positive")

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def from_frame(cls, frame: Any, *, sigma_column: str | None = "rvol_20") -> BarArrays:
        """From a polars frame of one symbol's bars or features (`ts`, `open`, `close`, `volume`, `sigma_column`)."""
        sigma = (
            frame[sigma_column].to_numpy().astype(np.float64)
            if sigma_column is not None
            else np.zeros(frame.height, dtype=np.float64)
        )
        return cls(
            ts=frame["ts"].to_numpy(),
            open=frame["open"].to_numpy().astype(np.float64),
            close=frame["close"].to_numpy().astype(np.float64),
            volume=frame["volume"].to_numpy().astype(np.float64),
            sigma=np.maximum(sigma, 0.0),
        )


@dataclass(frozen=True, slots=True)
class BacktestTrade:
    """One fill: the bar it filled on, the bar that decided it, signed shares, mid, fill price and costs."""

    bar: int
    decision_bar: int
    ts: Any
    shares: float
    mid: float
    fill_price: float
    commission: float
    participation: float
    sigma: float

    @property
    def notional(self) -> float:
        """|shares| · mid."""
        return abs(self.shares) * self.mid

    @property
    def cost(self) -> float:
        """Cash paid beyond the mid: (fill − mid) · shares + commission (never negative)."""
        return (self.fill_price - self.mid) * self.shares + self.commission


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Trades and, per bar after its fill, cash, shares and equity = cash + shares · close."""

    trades: list[BacktestTrade]
    ts: npt.NDArray[Any]
    cash: FloatArray
    shares: FloatArray
    equity: FloatArray
    initial_cash: float
    fill_at: FillAt
    rebalance: Rebalance

    @property
    def final_equity(self) -> float:
        """Equity after the last bar."""
        return float(self.equity[-1])

    @property
    def pnl(self) -> float:
        """Final equity minus initial cash."""
        return self.final_equity - self.initial_cash

    @property
    def total_commission(self) -> float:
        """Commission paid in cash."""
        return float(sum(t.commission for t in self.trades))

    @property
    def total_cost(self) -> float:
        """Everything paid beyond the mid: price concessions (spread, slippage, impact) plus commission."""
        return float(sum(t.cost for t in self.trades))

    def returns(self) -> FloatArray:
        """Simple return of each bar (bar 0 against the initial cash)."""
        prev = np.concatenate([[self.initial_cash], self.equity[:-1]])
        return np.asarray(self.equity / prev - 1.0, dtype=np.float64)


def _participation(shares: float, volume: FloatArray | None, bar: int) -> float:
    if volume is None:
        return 0.0
    vol = float(volume[bar])
    return abs(shares) / vol if vol > 0 else 1.0


def _round_to_lot(shares: float, lot_size: float) -> float:
    return math.trunc(shares / lot_size) * lot_size


def simulate(
    bars: BarArrays,
    targets: Sequence[float] | FloatArray,
    cost_model: CostModel,
    *,
    initial_cash: float = 100_000.0,
    fill_at: FillAt = "close",
    rebalance: Rebalance = "on_change",
    max_gross_leverage: float | None = None,
    lot_size: float = 0.0,
) -> BacktestResult:
    """Trade `targets` (fraction of equity decided at each bar's close) over `bars`; conventions in the module doc."""
    w = np.asarray(targets, dtype=np.float64)
    n = len(bars)
    if w.shape != (n,):
        raise ValueError(f"{n} bars but targets of shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("targets must be finite")
    if fill_at not in ("close", "next_open"):
        raise ValueError(f"fill_at must be 'close' or 'next_open', got {fill_at!r}")
    if rebalance not in ("on_change", "every_bar"):
        raise ValueError(f"rebalance must be 'on_change' or 'every_bar', got {rebalance!r}")
    if lot_size < 0:
        raise ValueError(f"lot_size must be >= 0, got {lot_size}")
    if max_gross_leverage is not None and max_gross_leverage <= 0:
        raise ValueError(f"max_gross_leverage must be positive, got {max_gross_leverage}")
    shift = 0 if fill_at == "close" else 1
    decidable = n - shift
    if rebalance == "on_change":
        previous = np.concatenate([[0.0], w[:-1]])
        deciding = np.flatnonzero(w[:decidable] != previous[:decidable])
    else:
        deciding = np.arange(decidable)
    close, open_, volume, sigma = bars.close, bars.open, bars.volume, bars.sigma

    # Cash flows and share changes land on the fill bar; bar 0's flow carries the initial cash so that the
    # cumulative sum reproduces the sequential cash balance bit for bit.
    flows = np.zeros(n, dtype=np.float64)
    flows[0] = float(initial_cash)
    share_moves = np.zeros(n, dtype=np.float64)
    trades: list[BacktestTrade] = []
    cash, shares = float(initial_cash), 0.0
    for t in deciding.tolist():
        price = float(close[t])
        equity = cash + shares * price
        wanted = float(w[t]) * equity / price
        if lot_size > 0:
            wanted = _round_to_lot(wanted, lot_size)
            delta = _round_to_lot(wanted - shares, lot_size) if wanted != 0.0 else -shares
        else:
            delta = wanted - shares
        if delta == 0.0:
            continue
        bar = t + shift
        mid = price if shift == 0 else float(open_[bar])
        s = float(sigma[t])
        participation = _participation(delta, volume, bar)
        if max_gross_leverage is not None and delta > 0:
            floor = -(max_gross_leverage - 1.0) * (cash + shares * mid)
            cost = delta * mid * float(cost_model.cost_rate(participation, s))
            if cash - delta * mid - cost < floor:
                # The env's rule: cut the buy so cash after price and cost stays at the floor.
                delta = max(0.0, (cash - floor) / (mid + cost / delta))
                if delta == 0.0:
                    continue
                participation = _participation(delta, volume, bar)
        fill = cost_model.fill_price(mid, delta, participation, s)
        commission = cost_model.commission(abs(delta) * mid)
        flow = -(delta * fill + commission)
        cash += flow
        shares += delta
        flows[bar] += flow
        share_moves[bar] += delta
        trades.append(BacktestTrade(bar, t, bars.ts[bar], delta, mid, fill, commission, participation, s))
    cash_path = np.cumsum(flows)
    shares_path = np.cumsum(share_moves)
    return BacktestResult(
        trades=trades,
        ts=bars.ts,
        cash=cash_path,
        shares=shares_path,
        equity=cash_path + shares_path * close,
        initial_cash=float(initial_cash),
        fill_at=fill_at,
        rebalance=rebalance,
    )
