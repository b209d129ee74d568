"""AlpacaBroker against a loopback server speaking Alpaca's Trading API v2 wire format."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gpt_trader.trading.alpaca import AlpacaBroker, parse_order, parse_position
from gpt_trader.trading.errors import BrokerError, OrderRejectedError
from gpt_trader.trading.execution import Broker
from gpt_trader.trading.types import Order, OrderStatus, OrderType, Side
from tests.support.alpaca_trading_server import KEY_ID, SECRET_KEY, AlpacaTradingServer

D = Decimal
T0 = datetime(2024, 1, 2, 15, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[AlpacaTradingServer]:
    with AlpacaTradingServer() as s:
        yield s


@pytest.fixture
def broker(server: AlpacaTradingServer) -> Iterator[AlpacaBroker]:
    with AlpacaBroker(
        server.credentials(), base_url=server.url, timeout_secs=2, max_retries=3, backoff_base_secs=0.001
    ) as b:
        yield b


def order(cid: str = "strat-abc", qty: str = "10", side: Side = Side.BUY, **kw) -> Order:
    return Order(cid, "AAPL", side, D(qty), T0, **kw)


def test_alpaca_broker_is_a_broker(broker: AlpacaBroker):
    assert isinstance(broker, Broker)


def test_submit_posts_alpaca_order_json_with_key_headers(broker, server):
    placed = broker.submit(order(type=OrderType.LIMIT, limit_price=D("187.5")))
    assert placed.status is OrderStatus.NEW
    assert placed.client_order_id == "strat-abc"
    (post,) = [r for r in server.requests if r.method == "POST"]
    assert post.path == "/v2/orders"
    assert post.body == {
        "symbol": "AAPL",
        "qty": "10",
        "side": "buy",
        "type": "limit",
        "time_in_force": "day",
        "client_order_id": "strat-abc",
        "limit_price": "187.5",
    }


def test_submit_duplicate_client_order_id_returns_existing_order(broker, server):
    first = broker.submit(order())
    again = broker.submit(order())
    assert again.id == first.id
    assert len(server.orders_for("strat-abc")) == 1
    assert sum(1 for r in server.requests if r.method == "POST") == 2  # the second got 422 and was resolved


def test_submit_after_dropped_response_looks_up_and_does_not_double_order(broker, server):
    server.drop_responses(1, method="POST", path="/v2/orders")
    placed = broker.submit(order())
    assert len(server.orders_for("strat-abc")) == 1
    assert placed.id == server.orders_for("strat-abc")[0]["id"]
    paths = [(r.method, r.path) for r in server.requests]
    assert paths == [("POST", "/v2/orders"), ("GET", "/v2/orders:by_client_order_id")]


def test_submit_after_5xx_not_created_retries_post(broker, server):
    server.fail(2, 503, method="POST")
    placed = broker.submit(order())
    assert len(server.orders_for("strat-abc")) == 1
    assert placed.status is OrderStatus.NEW
    assert sum(1 for r in server.requests if r.method == "POST") == 3


def test_submit_rejected_order_raises_with_reason(broker):
    too_long = Order("y" * 49, "AAPL", Side.BUY, D(1), T0)
    with pytest.raises(OrderRejectedError, match="422"):
        broker.submit(too_long)


def test_submit_persistent_network_failure_raises_broker_error(server):
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    with (
        AlpacaBroker(server.credentials(), base_url=dead, max_retries=1, backoff_base_secs=0.001) as b,
        pytest.raises(BrokerError, match="failed"),
    ):
        b.submit(order())


def test_open_orders_cancel_and_poll_fills(broker, server):
    a = broker.submit(order("a", "10"))
    b = broker.submit(order("b", "5", Side.SELL))
    assert {o.client_order_id for o in broker.open_orders()} == {"a", "b"}
    broker.cancel(b.id)
    assert [o.client_order_id for o in broker.open_orders()] == ["a"]
    broker.cancel(b.id)  # already canceled: 422 is tolerated
    server.fill("a", D("100"), D("4"))
    server.fill("a", D("103"))
    (fill,) = broker.poll_fills()
    assert fill.quantity == D(10)
    assert fill.price == D("101.8")
    assert fill.order_id == a.id
    assert broker.poll_fills() == []
    with pytest.raises(BrokerError, match="404"):
        broker.cancel("no-such-order")


def test_poll_fills_reports_partial_fills_incrementally(broker, server):
    broker.submit(order("p", "10"))
    server.fill("p", D("50"), D("3"))
    (first,) = broker.poll_fills()
    server.fill("p", D("60"), D("7"))
    (second,) = broker.poll_fills()
    assert (first.quantity, first.price) == (D(3), D(50))
    assert (second.quantity, second.price) == (D(7), D(60))
    assert first.fill_id != second.fill_id


def test_positions_and_cash_parse_alpaca_format(broker, server):
    server.set_position("AAPL", D(10), D("150.25"))
    server.set_position("TSLA", D(-3), D("200"))
    server.set_price("AAPL", D(160))
    positions = broker.positions()
    assert positions["AAPL"].quantity == D(10)
    assert positions["AAPL"].avg_price == D("150.25")
    assert positions["TSLA"].quantity == D(-3)
    assert broker.cash() == D(100_000)


def test_bad_credentials_raise_with_hint(server):
    from pydantic import SecretStr

    from gpt_trader.data.sources.credentials import AlpacaCredentials

    creds = AlpacaCredentials(key_id=SecretStr("wrong"), secret_key=SecretStr("wrong"))
    with AlpacaBroker(creds, base_url=server.url, max_retries=0) as b, pytest.raises(BrokerError) as err:
        b.positions()
    assert "401" in str(err.value)
    assert "APCA_API_KEY_ID" in str(err.value)
    assert SECRET_KEY not in str(err.value)
    assert KEY_ID not in str(err.value)


def test_parse_order_and_position_wire_format():
    payload = {
        "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
        "client_order_id": "eb9e2aaa",
        "submitted_at": "2021-03-16T18:38:01.937734Z",
        "filled_at": None,
        "symbol": "AAPL",
        "qty": "5",
        "filled_qty": "2",
        "filled_avg_price": "120.5",
        "type": "market",
        "side": "sell",
        "time_in_force": "day",
        "limit_price": None,
        "status": "partially_filled",
    }
    parsed = parse_order(payload)
    assert parsed.status is OrderStatus.PARTIALLY_FILLED
    assert parsed.remaining == D(3)
    assert parsed.order.side is Side.SELL
    assert parsed.submitted_at.tzinfo is not None
    assert parse_order({**payload, "status": "expired"}).status is OrderStatus.CANCELED
    short = parse_position({"symbol": "TSLA", "qty": "3", "side": "short", "avg_entry_price": "200"})
    assert short.quantity == D(-3)
