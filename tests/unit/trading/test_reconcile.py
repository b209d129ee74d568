from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.reconcile import DifferenceKind, reconcile
from gpt_trader.trading.types import BrokerOrder, Fill, Order, OrderStatus, Position, Side

D = Decimal
T0 = datetime(2024, 1, 2, 15, tzinfo=UTC)


def order(cid: str, qty: str = "5") -> Order:
    return Order(cid, "AAPL", Side.BUY, D(qty), T0)


def test_reconcile_matching_state_is_clean():
    broker = PaperBroker(CostModel(), initial_cash=D(1000))
    book = Portfolio(D(1000))
    placed = broker.submit(order("a"))
    result = reconcile(book, broker, [placed])
    assert result.clean
    assert result.open_orders == (placed,)


def test_reconcile_takes_broker_positions_cash_and_orders():
    broker = PaperBroker(CostModel(), initial_cash=D(1000))
    filled_while_down = broker.submit(order("filled"))
    broker.on_price("AAPL", 100.0, T0)
    adopted = broker.submit(order("adopted", "1"))
    book = Portfolio(D(1000))
    book.apply_fill(Fill("f0", "x", "x", "MSFT", Side.BUY, D(2), D(50), D(0), T0))  # unknown to the broker
    never_sent = BrokerOrder(order("lost"), "paper-lost", OrderStatus.NEW)
    stale_local = BrokerOrder(filled_while_down.order, filled_while_down.id, OrderStatus.NEW)

    result = reconcile(book, broker, [stale_local, never_sent])

    kinds = {(d.kind, d.key) for d in result.differences}
    assert kinds == {
        (DifferenceKind.POSITION, "AAPL"),
        (DifferenceKind.POSITION, "MSFT"),
        (DifferenceKind.CASH, "cash"),
        (DifferenceKind.ORDER_CLOSED, "filled"),
        (DifferenceKind.ORDER_UNKNOWN, "lost"),
        (DifferenceKind.ORDER_ADOPTED, "adopted"),
    }
    assert book.positions == broker.positions()
    assert book.cash == broker.cash()
    assert [o.client_order_id for o in result.open_orders] == ["adopted"]
    statuses = {o.client_order_id: o.status for o in result.changed_orders}
    assert statuses == {"filled": OrderStatus.FILLED, "lost": OrderStatus.CANCELED, "adopted": OrderStatus.NEW}
    assert adopted.status is OrderStatus.NEW
    assert book.position("MSFT") == Position("MSFT")
    assert reconcile(book, broker, list(result.open_orders)).clean
