from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import Fill, Side, cents

D = Decimal
T0 = datetime(2024, 1, 2, tzinfo=UTC)
TOL = D("1e-12")  # average prices are 28-digit decimals; identities hold far below a cent


def fill(n: int, qty: str, price: str, commission: str = "0", symbol: str = "AAPL") -> Fill:
    q = D(qty)
    side = Side.BUY if q > 0 else Side.SELL
    return Fill(f"f{n}", f"o{n}", f"c{n}", symbol, side, abs(q), D(price), D(commission), T0)


def test_apply_fill_average_cost_and_realized_pnl():
    book = Portfolio(D(10_000))
    book.apply_fill(fill(1, "10", "100", "1"))
    book.apply_fill(fill(2, "10", "110", "1"))
    assert book.position("AAPL").avg_price == D(105)
    book.apply_fill(fill(3, "-5", "120", "1"))
    assert book.realized_pnl == D(75)  # 5 * (120 - 105)
    assert book.cash == D(10_000) - 1000 - 1100 + 600 - 3
    book.mark("AAPL", D(100))
    assert book.unrealized_pnl() == D(-75)  # 15 * (100 - 105)
    assert book.equity() == book.cash + 15 * D(100)


def test_apply_fill_flip_opens_remainder_at_fill_price():
    book = Portfolio(D(10_000))
    book.apply_fill(fill(1, "10", "100"))
    book.apply_fill(fill(2, "-15", "90"))
    assert book.position("AAPL").quantity == D(-5)
    assert book.position("AAPL").avg_price == D(90)
    assert book.realized_pnl == D(-100)


def test_apply_fill_duplicate_id_is_ignored():
    book = Portfolio(D(10_000))
    assert book.apply_fill(fill(1, "10", "100", "1"))
    assert not book.apply_fill(fill(1, "10", "100", "1"))
    assert book.quantity("AAPL") == D(10)
    assert book.cash == D(8_999)


def test_mark_non_positive_price_raises():
    with pytest.raises(ValueError, match="must be positive"):
        Portfolio(D(1)).mark("AAPL", D(0))


fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AAPL", "MSFT"]),
        st.decimals(min_value=-500, max_value=500, places=3, allow_nan=False).filter(lambda q: q != 0),
        st.decimals(min_value=1, max_value=1000, places=4, allow_nan=False),
        st.decimals(min_value=0, max_value=5, places=4, allow_nan=False),
        st.decimals(min_value=1, max_value=1000, places=4, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(trades=fills_strategy)
def test_portfolio_identities_hold_after_any_fills(trades):
    book = Portfolio(D(1_000_000))
    cash_flows = D(0)
    for n, (symbol, qty, price, commission, mark) in enumerate(trades):
        f = fill(n, str(qty), str(price), str(commission), symbol)
        book.apply_fill(f)
        cash_flows += f.cash_flow
        book.mark(symbol, mark)
        equity = book.equity()
        # equity = cash + Σ qty·mark
        assert equity == book.cash + sum((p.quantity * book.mark_price(s) for s, p in book.positions.items()), D(0))
        # P&L decomposes: realized + unrealized − commissions = equity − initial cash
        assert abs(book.total_pnl() - (equity - book.initial_cash)) < TOL
    # Cash reconciles with the fills exactly, hence to the cent.
    assert book.cash == book.initial_cash + cash_flows
    assert cents(book.cash) == cents(book.initial_cash + cash_flows)
