from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.errors import BrokerError
from gpt_trader.trading.execution import Broker, PaperBroker, make_client_order_id
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import Order, OrderStatus, OrderType, Side, cents, to_decimal

D = Decimal
T0 = datetime(2024, 1, 2, 15, tzinfo=UTC)
COSTS = CostModel(CostConfig(commission_bps=1.0, spread_bps=2.0, slippage_bps=0.5, impact_coef=0.1))


def buy(qty: str, cid: str = "c1", **kw) -> Order:
    return Order(cid, "AAPL", Side.BUY, D(qty), T0, **kw)


def test_paper_broker_is_a_broker():
    assert isinstance(PaperBroker(), Broker)


def test_submit_fills_at_next_price_with_cost_model_price_and_commission():
    broker = PaperBroker(COSTS)
    placed = broker.submit(buy("100"))
    assert placed.status is OrderStatus.NEW
    assert broker.poll_fills() == []
    (fill,) = broker.on_price("AAPL", 200.0, T0 + timedelta(minutes=1), volume=10_000, sigma=0.02)
    expected_price = COSTS.fill_price(200.0, 100, participation=0.01, sigma=0.02)
    assert fill.price == to_decimal(expected_price)
    assert fill.commission == to_decimal(COSTS.commission(100 * 200.0))
    # Fill-price loss + commission is the backtest's rebalance cost of the same notional.
    paid = (fill.price - D(200)) * 100 + fill.commission
    assert float(paid) == pytest.approx(float(COSTS.rebalance_cost(20_000.0, 0.01, 0.02)), rel=1e-12)
    assert broker.get_order("c1").status is OrderStatus.FILLED
    assert broker.poll_fills() == [fill]
    assert broker.poll_fills() == []


def test_submit_duplicate_client_order_id_returns_same_order_and_fills_once():
    broker = PaperBroker(COSTS)
    first = broker.submit(buy("10"))
    again = broker.submit(buy("999"))
    assert again == first
    assert len(broker.on_price("AAPL", 100.0, T0)) == 1
    assert broker.submit(buy("10")).status is OrderStatus.FILLED
    assert broker.on_price("AAPL", 101.0, T0) == []
    assert broker.positions()["AAPL"].quantity == D(10)


def test_fills_reconcile_with_portfolio_to_the_cent():
    broker = PaperBroker(COSTS, initial_cash=D(50_000))
    book = Portfolio(D(50_000))
    broker.add_fill_listener(book.apply_fill)
    mids = [100.0, 101.3, 99.7, 102.2, 98.1]
    for i, (qty, mid) in enumerate(zip(["100", "-40", "-120", "60", "0.5"], mids, strict=True)):
        q = D(qty)
        broker.submit(Order(f"c{i}", "AAPL", Side.BUY if q > 0 else Side.SELL, abs(q), T0))
        broker.on_price("AAPL", mid, T0 + timedelta(minutes=i), volume=5_000, sigma=0.01)
    fills = broker.poll_fills()
    assert len(fills) == 5
    assert book.cash == broker.cash() == D(50_000) + sum((f.cash_flow for f in fills), D(0))
    assert book.positions == broker.positions()
    # Costs in cash equal the cost model's rebalance cost of each trade's mid notional, to the cent.
    paid = sum(
        ((f.price - to_decimal(m)) * f.signed_quantity + f.commission for f, m in zip(fills, mids, strict=True)), D(0)
    )
    expected = sum(
        COSTS.rebalance_cost(float(f.quantity) * m, float(f.quantity) / 5_000, 0.01)
        for f, m in zip(fills, mids, strict=True)
    )
    assert cents(paid) == cents(to_decimal(float(expected)))
    book.mark("AAPL", D("98.1"))
    assert cents(book.equity() - book.initial_cash) == cents(book.total_pnl())


def test_limit_order_fills_only_when_price_crosses():
    broker = PaperBroker(CostModel(CostConfig(commission_bps=0, spread_bps=0, slippage_bps=0, impact_coef=0)))
    broker.submit(buy("5", type=OrderType.LIMIT, limit_price=D(99)))
    assert broker.on_price("AAPL", 100.0, T0) == []
    (fill,) = broker.on_price("AAPL", 98.5, T0)
    assert fill.price == D("98.5")


def test_cancel_open_order_stops_fill_and_unknown_id_raises():
    broker = PaperBroker(COSTS)
    placed = broker.submit(buy("5"))
    broker.cancel(placed.id)
    assert broker.open_orders() == []
    assert broker.on_price("AAPL", 100.0, T0) == []
    with pytest.raises(BrokerError, match="no order"):
        broker.cancel("nope")


def test_make_client_order_id_is_deterministic_and_short():
    a = make_client_order_id("momentum", "BTC/USD", T0)
    assert a == make_client_order_id("momentum", "BTC/USD", T0)
    assert a != make_client_order_id("momentum", "BTC/USD", T0 + timedelta(minutes=1))
    assert a != make_client_order_id("momentum", "ETH/USD", T0)
    assert len(make_client_order_id("x" * 40, "AAPL", T0)) <= 48


def test_restore_keeps_open_orders_fillable_and_closed_ones_inert_per_symbol():
    source = PaperBroker(COSTS)
    source.submit(buy("3", "filled"))
    source.on_price("AAPL", 100.0, T0)
    source.submit(buy("4", "open-aapl"))
    source.submit(Order("open-msft", "MSFT", Side.SELL, D(2), T0))
    restored = PaperBroker(COSTS)
    orders = [source.get_order(cid) for cid in ("filled", "open-aapl", "open-msft")]
    restored.restore(orders=[o for o in orders if o is not None], positions=[], cash=D(100_000))
    assert {o.client_order_id for o in restored.open_orders()} == {"open-aapl", "open-msft"}
    (fill,) = restored.on_price("AAPL", 101.0, T0)  # the filled order stays filled; only the open one trades
    assert fill.client_order_id == "open-aapl"
    assert restored.on_price("AAPL", 102.0, T0) == []
    (fill,) = restored.on_price("MSFT", 50.0, T0)
    assert fill.client_order_id == "open-msft"
    assert fill.side is Side.SELL
