"""Order execution: the `Broker` protocol, deterministic client order ids, and the in-process `PaperBroker`.

Every broker is idempotent by `client_order_id`: submitting the same id twice returns the first order and never
trades twice. Ids derive from (strategy, symbol, bar time), so a process that restarts and re-decides the same
bar reuses the id and the broker recognises the order. `AlpacaBroker` (in `alpaca.py`) is re-exported here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from gpt_trader.trading.alpaca import AlpacaBroker
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.errors import BrokerError
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import (
    BrokerOrder,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    to_decimal,
)

__all__ = ["AlpacaBroker", "Broker", "FillListener", "PaperBroker", "make_client_order_id"]

MAX_CLIENT_ORDER_ID = 48  # Alpaca's limit

FillListener = Callable[[Fill], None]


def make_client_order_id(strategy: str, symbol: str, bar_ts: datetime, tag: str = "") -> str:
    """A deterministic id (≤ 48 chars) for the order a strategy places on `symbol` at bar `bar_ts`."""
    key = f"{strategy}|{symbol}|{bar_ts.isoformat()}|{tag}".encode()
    digest = hashlib.blake2b(key, digest_size=12).hexdigest()
    return f"{strategy[: MAX_CLIENT_ORDER_ID - 25]}-{digest}"


@runtime_checkable
class Broker(Protocol):
    """Where orders go: paper simulation or a real broker."""

    def submit(self, order: Order) -> BrokerOrder:
        """Place `order`; a `client_order_id` seen before returns the existing order unchanged."""
        ...

    def cancel(self, order_id: str) -> None:
        """Cancel an open order by the broker's id (no-op if it already closed)."""
        ...

    def get_order(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this client id, or None if the broker never saw it."""
        ...

    def open_orders(self) -> list[BrokerOrder]:
        """Orders that may still fill."""
        ...

    def positions(self) -> dict[str, Position]:
        """Non-flat positions by symbol."""
        ...

    def cash(self) -> Decimal:
        """Cash balance."""
        ...

    def poll_fills(self) -> list[Fill]:
        """Fills that happened since the last poll, oldest first."""
        ...


class PaperBroker:
    """Simulated broker: market orders fill at the next price it is given, with costs from the one `CostModel`.

    The fill price is `CostModel.fill_price(mid, qty, participation, sigma)` (half-spread + slippage + impact,
    participation = qty / bar volume when known, 1 on a zero-volume bar) and the commission is
    `CostModel.commission(qty · mid)`, so (fill − mid)·qty + commission equals `rebalance_cost` of the trade:
    the backtest and the paper broker charge the same. Limit orders fill at that price when it is within the limit.
    """

    def __init__(self, cost_model: CostModel | None = None, *, initial_cash: Decimal = Decimal(100_000)) -> None:
        self.cost_model = cost_model or CostModel()
        self._book = Portfolio(initial_cash)
        self._orders: dict[str, BrokerOrder] = {}
        # Open orders' client ids per symbol, in submission order: `_orders` keeps every order ever placed (for
        # idempotency), and a price must not scan them all, or each bar would cost more the longer a session runs.
        self._open: dict[str, dict[str, None]] = {}
        # Every open order's client id in submission order: `open_orders` without scanning every order ever placed.
        self._open_all: dict[str, None] = {}
        self._unpolled: list[Fill] = []
        self._listeners: list[FillListener] = []

    # --- Broker protocol -------------------------------------------------------------------------------------
    def submit(self, order: Order) -> BrokerOrder:
        """Accept `order` (status new); it fills on the next `on_price` for its symbol."""
        existing = self._orders.get(order.client_order_id)
        if existing is not None:
            return existing
        placed = BrokerOrder(order, id=f"paper-{order.client_order_id}", status=OrderStatus.NEW, submitted_at=order.ts)
        self._orders[order.client_order_id] = placed
        self._open.setdefault(order.symbol, {})[order.client_order_id] = None
        self._open_all[order.client_order_id] = None
        return placed

    def cancel(self, order_id: str) -> None:
        """Cancel an open order by id."""
        for cid, placed in self._orders.items():
            if placed.id == order_id:
                if placed.status.is_open:
                    self._orders[cid] = replace(placed, status=OrderStatus.CANCELED)
                    self._open.get(placed.order.symbol, {}).pop(cid, None)
                    self._open_all.pop(cid, None)
                return
        raise BrokerError(f"paper: no order with id {order_id!r} to cancel", status=404)

    def get_order(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this client id, or None."""
        return self._orders.get(client_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        """Orders not yet filled or canceled, in submission order."""
        return [self._orders[cid] for cid in self._open_all]

    def has_open(self, symbol: str) -> bool:
        """Whether an order on `symbol` may still fill (so a price for it can fill something)."""
        return bool(self._open.get(symbol))

    def positions(self) -> dict[str, Position]:
        """The broker's own view of positions."""
        return self._book.positions

    def cash(self) -> Decimal:
        """The broker's cash balance."""
        return self._book.cash

    def poll_fills(self) -> list[Fill]:
        """Fills since the last poll."""
        out, self._unpolled = self._unpolled, []
        return out

    # --- simulation ------------------------------------------------------------------------------------------
    def add_fill_listener(self, listener: FillListener) -> None:
        """Call `listener` with every fill as it happens (beside `poll_fills`)."""
        self._listeners.append(listener)

    def on_price(
        self,
        symbol: str,
        price: float | Decimal,
        ts: datetime,
        volume: float | None = None,
        sigma: float | None = None,
    ) -> list[Fill]:
        """A new tick or bar-open price for `symbol`: fill the open orders on it and return the fills."""
        mid = float(price)
        fills: list[Fill] = []
        open_ids = self._open.get(symbol, {})
        for cid in list(open_ids):
            placed = self._orders[cid]
            order = placed.order
            qty = placed.remaining
            signed = float(qty) * order.side.sign
            # Unknown volume: no impact estimate; a bar that traded nothing: we would be the whole market.
            participation = 0.0 if volume is None else float(qty) / volume if volume > 0 else 1.0
            fill_price = to_decimal(self.cost_model.fill_price(mid, signed, participation, sigma or 0.0))
            if order.type is OrderType.LIMIT and order.limit_price is not None:
                crosses = fill_price <= order.limit_price if order.side is Side.BUY else fill_price >= order.limit_price
                if not crosses:
                    continue
            commission = to_decimal(self.cost_model.commission(float(qty) * mid))
            fill = Fill(
                fill_id=f"{placed.id}-1",
                order_id=placed.id,
                client_order_id=cid,
                symbol=symbol,
                side=order.side,
                quantity=qty,
                price=fill_price,
                commission=commission,
                ts=ts,
            )
            self._orders[cid] = replace(
                placed,
                status=OrderStatus.FILLED,
                filled_quantity=order.quantity,
                filled_avg_price=fill_price,
                filled_at=ts,
            )
            del open_ids[cid]
            del self._open_all[cid]
            self._book.apply_fill(fill)
            fills.append(fill)
        if fills:
            self._book.mark(symbol, to_decimal(mid))
        self._unpolled.extend(fills)
        for fill in fills:
            for listener in self._listeners:
                listener(fill)
        return fills

    def restore(self, *, orders: list[BrokerOrder], positions: list[Position], cash: Decimal) -> None:
        """Reload a paper account from saved state after a restart (paper has no server to ask).

        `orders` should hold closed orders too, so that re-submitting a filled order's id stays a no-op.
        """
        self._orders = {o.client_order_id: o for o in orders}
        self._open, self._open_all = {}, {}
        for o in orders:
            if o.status.is_open:
                self._open.setdefault(o.order.symbol, {})[o.client_order_id] = None
                self._open_all[o.client_order_id] = None
        for p in positions:
            self._book.set_position(p)
        self._book.cash = cash
