"""Frozen value types of the trading path: signals, orders, broker order states, fills and positions.

Money and quantities are `Decimal`. Prices from the cost model (floats) enter through `to_decimal`, which keeps
the float's shortest round-trip digits, and from then on cash = Σ price·qty + commission is exact decimal
arithmetic: the portfolio reconciles with its fills to the cent (indeed exactly), on every backend, because the
state store keeps decimals as text. Rounding to cents happens only when showing money (`cents`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

ZERO = Decimal(0)
CENT = Decimal("0.01")


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """An exact decimal for a price, quantity or amount; floats keep their shortest round-trip repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"money and quantities must be finite, got {value!r}")
        return Decimal(repr(value))
    return Decimal(value)


def cents(amount: Decimal) -> Decimal:
    """`amount` rounded to the cent (banker's rounding), for display and reconciliation reports."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


class Side(StrEnum):
    """Order side, spelled as Alpaca spells it."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for buys, -1 for sells."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """Order types the trading path uses."""

    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    """Order lifecycle, a subset of Alpaca's statuses (others map onto these)."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        """Whether the order may still fill."""
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class TradingState(StrEnum):
    """What the risk manager lets through: everything, only risk-reducing orders, or nothing."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


@dataclass(frozen=True, slots=True)
class Signal:
    """A combined model view: the target position in [-1, 1] (fraction of equity) for `symbol` as of `ts`."""

    symbol: str
    ts: datetime
    target: float
    confidence: float
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not -1.0 <= self.target <= 1.0:
            raise ValueError(f"signal target for {self.symbol} must be in [-1, 1], got {self.target}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"signal confidence for {self.symbol} must be in [0, 1], got {self.confidence}")

    @property
    def direction(self) -> int:
        """-1 short, 0 flat, +1 long."""
        return (self.target > 0) - (self.target < 0)


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the strategy asks for it; `client_order_id` makes submission idempotent."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    ts: datetime
    type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: str = "day"

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError(f"order {self.client_order_id}: quantity must be positive, got {self.quantity}")
        if (self.type is OrderType.LIMIT) != (self.limit_price is not None):
            raise ValueError(f"order {self.client_order_id}: a limit price goes with limit orders only")

    @property
    def signed_quantity(self) -> Decimal:
        """Quantity with the side's sign: positive buys, negative sells."""
        return self.quantity * self.side.sign


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """An order as the broker holds it: its id, status and how much has filled so far."""

    order: Order
    id: str
    status: OrderStatus
    filled_quantity: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None

    @property
    def client_order_id(self) -> str:
        """The strategy's id of the order."""
        return self.order.client_order_id

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill."""
        return self.order.quantity - self.filled_quantity


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: `fill_id` is unique per execution, so applying a fill twice is detectable."""

    fill_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    commission: Decimal
    ts: datetime

    @property
    def signed_quantity(self) -> Decimal:
        """Positive for buys, negative for sells."""
        return self.quantity * self.side.sign

    @property
    def cash_flow(self) -> Decimal:
        """Cash change of this fill: −(signed qty · price) − commission."""
        return -(self.signed_quantity * self.price) - self.commission


@dataclass(frozen=True, slots=True)
class Position:
    """Holding in one symbol: signed quantity and average entry price (average-cost accounting)."""

    symbol: str
    quantity: Decimal = ZERO
    avg_price: Decimal = ZERO
