from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.trading.config import RiskConfig
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.risk import HaltReason, RejectCode, RiskManager, is_risk_reducing
from gpt_trader.trading.types import BrokerOrder, Fill, Order, OrderStatus, Side, TradingState

D = Decimal
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
# Loose limits, so each test tightens only the rule it is about.
LOOSE = {
    "max_position_fraction": 10.0,
    "max_gross_exposure": 10.0,
    "max_order_notional_usd": 1e9,
    "max_loss_per_trade_fraction": 1.0,
    "stop_loss_fraction": 0.01,
    "daily_loss_limit_fraction": 0.5,
    "max_drawdown_fraction": 0.9,
    "max_orders_per_window": 1000,
    "max_bar_age_secs": 300,
}


def make(**overrides: float) -> tuple[RiskManager, SimClock, Portfolio]:
    clock = SimClock(T0)
    risk = RiskManager(RiskConfig(**{**LOOSE, **overrides}), clock)
    for symbol in ("AAPL", "MSFT"):
        risk.on_bar(symbol, T0)
    book = Portfolio(D(100_000))
    book.mark("AAPL", D(100))
    book.mark("MSFT", D(200))
    return risk, clock, book


def order(qty: int, symbol: str = "AAPL", cid: str = "o1") -> Order:
    return Order(cid, symbol, Side.BUY if qty > 0 else Side.SELL, D(abs(qty)), T0)


def hold(book: Portfolio, symbol: str, qty: int, price: int) -> None:
    side = Side.BUY if qty > 0 else Side.SELL
    book.apply_fill(Fill(f"f-{symbol}-{qty}", "x", "x", symbol, side, D(abs(qty)), D(price), D(0), T0))


def test_check_order_within_limits_is_approved():
    risk, _, book = make()
    assert risk.check_order(order(10), book).approved


def test_check_order_max_position_rejects_oversized_position():
    risk, _, book = make(max_position_fraction=0.2)
    decision = risk.check_order(order(201), book)  # 20,100 > 0.2 * 100,000
    assert decision.codes == (RejectCode.MAX_POSITION,)
    assert "AAPL" in decision.rejections[0].message
    assert risk.check_order(order(200), book).approved


def test_check_order_max_gross_exposure_counts_other_symbols():
    risk, _, book = make(max_gross_exposure=0.5)
    hold(book, "MSFT", 200, 200)  # 40,000 gross already
    assert risk.check_order(order(101), book).codes == (RejectCode.MAX_GROSS_EXPOSURE,)
    assert risk.check_order(order(99), book).approved


def test_check_order_in_a_batch_counts_the_orders_still_pending():
    # 30,000 of AAPL and 40,000 of MSFT each fit a 0.5 gross limit alone, not together before either fills.
    risk, _, book = make(max_gross_exposure=0.5)
    risk.begin_batch([], book)
    assert risk.check_order(order(300), book).approved
    assert risk.held("AAPL", book) == D(300)
    decision = risk.check_order(order(200, "MSFT", "o2"), book)
    assert decision.codes == (RejectCode.MAX_GROSS_EXPOSURE,)
    assert risk.check_order(order(99, "MSFT", "o3"), book).approved  # 30,000 + 19,800 <= 50,000
    # Reducing the pending AAPL buy frees room again; it counts as reducing because of the pending 300.
    assert risk.check_order(order(-300, "AAPL", "o4"), book).approved
    assert risk.held("AAPL", book) == 0
    risk.end_batch()
    assert risk.held("MSFT", book) == 0  # outside a batch: positions alone, as before
    assert risk.check_order(order(200, "MSFT", "o5"), book).approved


def test_begin_batch_counts_the_brokers_open_orders():
    risk, _, book = make(max_position_fraction=0.2)
    open_buy = BrokerOrder(order(150, cid="open"), "b-1", OrderStatus.NEW)
    risk.begin_batch([open_buy], book)
    assert risk.held("AAPL", book) == D(150)
    assert risk.headroom("AAPL", D(100), book) == D(5_000)  # 0.2 * 100,000 - 150 * 100
    assert risk.check_order(order(51), book).codes == (RejectCode.MAX_POSITION,)
    assert risk.check_order(order(50, cid="o2"), book).approved
    assert risk.headroom("AAPL", D(100), book) == 0


def test_headroom_is_the_tighter_of_position_and_gross_room():
    risk, _, book = make(max_position_fraction=0.3, max_gross_exposure=0.5)
    hold(book, "MSFT", 150, 200)  # 30,000 gross; cash 70,000, equity 100,000
    risk.begin_batch([], book)
    assert risk.headroom("AAPL", D(100), book) == D(20_000)  # gross room 50,000 - 30,000 < position room 30,000
    assert risk.headroom("MSFT", D(200), book) == D(0)  # MSFT already at its 0.3 cap
    # MSFT doubles: 60,000 of it in an equity of 130,000 is 21,000 over its 0.3 cap (negative room: shrink it),
    # while the gross limit (65,000) leaves AAPL 5,000.
    book.mark("MSFT", D(400))
    assert risk.headroom("MSFT", D(400), book) == D(-21_000)
    assert risk.headroom("AAPL", D(100), book) == D(5_000)
    risk.end_batch()


def test_check_order_max_order_notional_rejects_big_order():
    risk, _, book = make(max_order_notional_usd=5_000)
    assert risk.check_order(order(51), book).codes == (RejectCode.MAX_ORDER_NOTIONAL,)


def test_check_order_loss_at_stop_over_budget_is_rejected():
    risk, _, book = make(stop_loss_fraction=0.05, max_loss_per_trade_fraction=0.01)
    # 201 shares * $100 * 5% = $1,005 > 1% of $100,000
    assert risk.check_order(order(201), book).codes == (RejectCode.MAX_LOSS_PER_TRADE,)
    assert risk.check_order(order(200), book).approved


def test_check_order_rate_limit_counts_approved_orders_in_window():
    risk, clock, book = make(max_orders_per_window=2, order_window_secs=60)
    assert risk.check_order(order(1, cid="a"), book).approved
    assert risk.check_order(order(1, cid="b"), book).approved
    assert risk.check_order(order(1, cid="c"), book).codes == (RejectCode.RATE_LIMIT,)
    clock.advance(timedelta(seconds=60))
    risk.on_bar("AAPL", clock.now())
    assert risk.check_order(order(1, cid="d"), book).approved


def test_check_order_stale_bar_blocks_new_exposure_but_not_reduction():
    risk, clock, book = make(max_bar_age_secs=120)
    hold(book, "AAPL", 10, 100)
    clock.advance(timedelta(seconds=121))
    decision = risk.check_order(order(5), book)
    assert decision.codes == (RejectCode.STALE_DATA,)
    assert "121s old" in decision.rejections[0].message
    assert risk.check_order(order(-5), book).approved


def test_check_order_symbol_without_bars_is_stale():
    risk, _, book = make()
    book.mark("TSLA", D(10))
    assert RejectCode.STALE_DATA in risk.check_order(order(1, "TSLA"), book).codes


def test_check_order_reducing_state_allows_only_risk_reducing_orders():
    risk, _, book = make()
    hold(book, "AAPL", 10, 100)
    risk.set_state(TradingState.REDUCING, "volatile market")
    assert risk.check_order(order(5), book).codes == (RejectCode.REDUCE_ONLY,)
    assert risk.check_order(order(-20), book).codes == (RejectCode.REDUCE_ONLY,)  # flips to short
    assert risk.check_order(order(-10), book).approved


def test_check_order_halted_state_rejects_everything():
    risk, _, book = make()
    hold(book, "AAPL", 10, 100)
    risk.set_state(TradingState.HALTED, "exchange outage")
    assert risk.check_order(order(-10), book).codes == (RejectCode.HALTED,)
    risk.set_state(TradingState.ACTIVE, "back")
    assert risk.check_order(order(-10), book).approved


def test_check_order_without_price_is_rejected():
    risk, _, book = make()
    risk.on_bar("NEW", T0)
    assert risk.check_order(order(1, "NEW"), book).codes == (RejectCode.NO_PRICE,)


def test_check_limits_daily_loss_trips_kill_switch_and_flattens():
    risk, _, book = make(daily_loss_limit_fraction=0.03)
    hold(book, "AAPL", 500, 100)
    hold(book, "MSFT", -100, 200)
    assert risk.check_limits(book) is None  # sets the day's baseline at 100,000
    book.mark("AAPL", D(93))  # -3,500 = -3.5%
    trip = risk.check_limits(book)
    assert trip is not None
    assert trip.reason is HaltReason.DAILY_LOSS
    assert {(o.symbol, o.side, o.quantity) for o in trip.flatten_orders} == {
        ("AAPL", Side.SELL, D(500)),
        ("MSFT", Side.BUY, D(100)),
    }
    assert risk.state is TradingState.HALTED
    assert risk.killed
    assert risk.check_order(order(1), book).codes == (RejectCode.HALTED,)
    assert risk.check_limits(book) is None  # trips once


def test_check_limits_drawdown_trips_across_days_and_latches():
    risk, clock, book = make(daily_loss_limit_fraction=0.5, max_drawdown_fraction=0.10)
    hold(book, "AAPL", 1000, 100)
    risk.check_limits(book)
    book.mark("AAPL", D(110))  # peak 110,000
    risk.check_limits(book)
    for price in (105, 101, 98):  # a slow bleed, under the daily limit each day
        clock.advance(timedelta(days=1))
        book.mark("AAPL", D(price))
        trip = risk.check_limits(book)
    assert trip is not None
    assert trip.reason is HaltReason.MAX_DRAWDOWN
    risk.set_state(TradingState.ACTIVE, "operator tries to resume")
    assert risk.state is TradingState.HALTED  # latched: only reset_kill_switch lifts it
    risk.reset_kill_switch(equity=book.equity())
    assert risk.state is TradingState.ACTIVE
    assert not risk.killed


def test_is_risk_reducing_cases():
    assert is_risk_reducing(D(10), D(-10))
    assert not is_risk_reducing(D(10), D(-11))
    assert not is_risk_reducing(D(0), D(-1))
    assert is_risk_reducing(D(-5), D(2))


@pytest.mark.parametrize("state", [TradingState.REDUCING, TradingState.HALTED])
def test_set_state_external_input_is_recorded(state: TradingState):
    risk, _, _ = make()
    risk.set_state(state, "market condition")
    assert risk.state is state


def test_check_order_feed_reported_down_blocks_new_exposure_until_healthy():
    risk, _, book = make()
    hold(book, "AAPL", 10, 100)
    risk.set_feed_status("AAPL", False, "alpaca: connection lost")
    decision = risk.check_order(order(5), book)  # the last bar is fresh: only the feed's word makes it stale
    assert decision.codes == (RejectCode.STALE_DATA,)
    assert decision.rejections[0].message == "AAPL: feed down (alpaca: connection lost)"
    assert risk.check_order(order(-5, cid="cut"), book).approved  # cutting exposure stays allowed
    assert risk.check_order(order(5, "MSFT", cid="other"), book).approved  # other symbols are unaffected
    risk.set_feed_status("AAPL", True)
    assert risk.check_order(order(5, cid="again"), book).approved


def test_stale_reason_names_what_is_stale():
    risk, clock, _ = make(max_bar_age_secs=120)
    assert risk.stale_reason("AAPL") is None
    assert risk.stale_reason("TSLA") == "TSLA: no bar seen yet"
    clock.advance(timedelta(seconds=121))
    assert "121s old" in (risk.stale_reason("AAPL") or "")
    risk.on_bar("AAPL", clock.now())
    assert risk.stale_reason("AAPL") is None
    assert risk.last_bar("AAPL") == clock.now()


def test_stale_data_counts_missed_bars_while_others_trade_so_a_weekend_or_one_late_bar_is_not_stale():
    """Daily bars of two symbols: AAPL one bar behind MSFT (ordinary batching lag), even across a weekend that
    is 3 days of bar time, is not stale; two bar times missed is."""
    risk, clock, _ = make(max_bar_age_secs=180)
    day = timedelta(days=1)
    fri = datetime(2024, 3, 8, tzinfo=UTC)  # a Friday's bar: it ends Saturday 00:00
    for symbol in ("AAPL", "MSFT"):
        risk.on_bar(symbol, fri + day)
    mon_end = fri + 4 * day  # Monday's bar ends Tuesday 00:00
    clock.set(mon_end)
    risk.on_bar("MSFT", mon_end)  # AAPL's Monday bar is late
    assert risk.stale_reason("MSFT") is None
    assert risk.stale_reason("AAPL") is None  # 3 days old, but only one bar behind
    clock.set(mon_end + day)
    risk.on_bar("MSFT", mon_end + day)  # ... and Tuesday's too: two bars missed
    reason = risk.stale_reason("AAPL")
    assert reason is not None
    assert "2 bars behind" in reason
