"""Positions, cash and P&L under average-cost accounting, in exact decimals.

Identities that hold after any sequence of fills and marks (property-tested):
    equity            = cash + Σ quantity · mark
    equity − initial  = realized + unrealized − commissions
    cash              = initial + Σ fill.cash_flow
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from gpt_trader.trading.types import ZERO, Fill, Position


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Equity marked at `ts`."""

    ts: datetime
    equity: Decimal


class Portfolio:
    """The strategy's book: apply fills, mark prices, read equity and P&L."""

    def __init__(self, initial_cash: Decimal, *, cash: Decimal | None = None) -> None:
        self.initial_cash = initial_cash
        # Equity and gross exposure are summed over all positions; with many symbols they are read many times
        # per bar (sizing, every risk check), so they are cached until a fill, a mark or a restore changes them.
        self._valuation: tuple[Decimal, Decimal] | None = None
        self._cash = initial_cash if cash is None else cash
        self.realized_pnl = ZERO
        self.commissions = ZERO
        self._positions: dict[str, Position] = {}
        self._marks: dict[str, Decimal] = {}
        self._fill_ids: set[str] = set()
        self.equity_curve: list[EquityPoint] = []

    # --- reading ---------------------------------------------------------------------------------------------
    @property
    def cash(self) -> Decimal:
        """Cash balance."""
        return self._cash

    @cash.setter
    def cash(self, value: Decimal) -> None:
        self._cash = value
        self._valuation = None

    def position(self, symbol: str) -> Position:
        """The position in `symbol` (flat if none)."""
        return self._positions.get(symbol, Position(symbol))

    def quantity(self, symbol: str) -> Decimal:
        """Signed quantity held in `symbol`."""
        return self.position(symbol).quantity

    @property
    def positions(self) -> dict[str, Position]:
        """Non-flat positions by symbol (a copy)."""
        return dict(self._positions)

    @property
    def marks(self) -> dict[str, Decimal]:
        """Last mark price per symbol (a copy)."""
        return dict(self._marks)

    def mark_price(self, symbol: str) -> Decimal:
        """Last mark of `symbol`, falling back to its average entry price before any mark."""
        return self._marks.get(symbol, self.position(symbol).avg_price)

    def market_value(self, symbol: str) -> Decimal:
        """Signed value of the position at its mark."""
        return self.quantity(symbol) * self.mark_price(symbol)

    def _values(self) -> tuple[Decimal, Decimal]:
        if self._valuation is None:
            values = [self.market_value(s) for s in self._positions]
            self._valuation = (self._cash + sum(values, ZERO), sum((abs(v) for v in values), ZERO))
        return self._valuation

    def equity(self) -> Decimal:
        """Cash plus the marked value of every position."""
        return self._values()[0]

    def gross_exposure(self) -> Decimal:
        """Σ |position value| at marks."""
        return self._values()[1]

    def unrealized_pnl(self) -> Decimal:
        """Σ quantity · (mark − average price)."""
        return sum((p.quantity * (self.mark_price(s) - p.avg_price) for s, p in self._positions.items()), ZERO)

    def total_pnl(self) -> Decimal:
        """Realized + unrealized − commissions (equals equity − initial cash)."""
        return self.realized_pnl + self.unrealized_pnl() - self.commissions

    def has_fill(self, fill_id: str) -> bool:
        """Whether this fill was already applied."""
        return fill_id in self._fill_ids

    # --- changing --------------------------------------------------------------------------------------------
    def apply_fill(self, fill: Fill) -> bool:
        """Book a fill (cash, position, realized P&L); a fill id seen before is ignored and returns False."""
        if fill.fill_id in self._fill_ids:
            return False
        self._fill_ids.add(fill.fill_id)
        self.cash += fill.cash_flow
        self.commissions += fill.commission
        old = self.position(fill.symbol)
        q, dq = old.quantity, fill.signed_quantity
        new_q = q + dq
        if q == 0 or (q > 0) == (dq > 0):
            # Opening or adding: the average price is the quantity-weighted mean of entries.
            avg = (abs(q) * old.avg_price + abs(dq) * fill.price) / abs(new_q)
        else:
            closed = min(abs(q), abs(dq))
            self.realized_pnl += closed * (fill.price - old.avg_price) * (1 if q > 0 else -1)
            # Reducing keeps the entry price; flipping through zero opens the remainder at the fill price.
            avg = old.avg_price if abs(dq) <= abs(q) else fill.price
        if new_q == 0:
            self._positions.pop(fill.symbol, None)
        else:
            self._positions[fill.symbol] = Position(fill.symbol, new_q, avg)
        self._marks.setdefault(fill.symbol, fill.price)
        self._valuation = None
        return True

    def mark(self, symbol: str, price: Decimal) -> None:
        """Set the mark price of `symbol` (a bar close, a trade)."""
        if price <= 0:
            raise ValueError(f"mark price for {symbol} must be positive, got {price}")
        self._marks[symbol] = price
        self._valuation = None

    def record_equity(self, ts: datetime) -> EquityPoint:
        """Append the current equity to the equity curve (replacing a point at the same `ts`) and return it."""
        point = EquityPoint(ts, self.equity())
        if self.equity_curve and self.equity_curve[-1].ts == ts:
            self.equity_curve[-1] = point  # another symbol's bar at the same time: one point per timestamp
        else:
            self.equity_curve.append(point)
        return point

    def set_position(self, position: Position) -> None:
        """Overwrite a position (restore from state, or reconciliation with the broker)."""
        if position.quantity == 0:
            self._positions.pop(position.symbol, None)
        else:
            self._positions[position.symbol] = position
        self._valuation = None

    def restore(
        self,
        *,
        positions: list[Position],
        marks: dict[str, Decimal],
        realized_pnl: Decimal,
        commissions: Decimal,
        fill_ids: set[str],
    ) -> None:
        """Load saved state (the state store calls this on restart)."""
        self._positions = {p.symbol: p for p in positions if p.quantity != 0}
        self._marks = dict(marks)
        self.realized_pnl = realized_pnl
        self.commissions = commissions
        self._fill_ids = set(fill_ids)
        self._valuation = None
