from __future__ import annotations

from decimal import Decimal

import pytest

from gpt_trader.trading.sizing import cap_to_headroom, order_quantity, round_to_lot, target_quantity

D = Decimal


def test_target_quantity_whole_lots_round_toward_zero():
    assert target_quantity(0.5, D(10_000), D(33)) == D(151)
    assert target_quantity(-0.5, D(10_000), D(33)) == D(-151)


def test_target_quantity_capped_by_max_position():
    assert target_quantity(1.0, D(10_000), D(100), max_position_fraction=0.25) == D(25)


def test_target_quantity_fractional_lot_keeps_fractions():
    assert target_quantity(0.5, D(1000), D(300), lot_size=D("0.001")) == D("1.666")


def test_order_quantity_trades_difference_and_skips_tiny_orders():
    assert order_quantity(0.5, D(40), D(10_000), D(100)) == D(10)
    assert order_quantity(0.5, D(49), D(10_000), D(100), min_order_notional=D(150)) == D(0)
    assert order_quantity(0.0, D(-7), D(10_000), D(100)) == D(7)


def test_round_to_lot_and_bad_price():
    assert round_to_lot(D("12.7"), D(5)) == D(10)
    with pytest.raises(ValueError, match="price must be positive"):
        target_quantity(0.5, D(100), D(0))


def test_cap_to_headroom_shrinks_only_what_adds_exposure():
    # 1,000 of room at 100: 10 more shares on top of a held 5.
    assert cap_to_headroom(D(30), D(5), D(100), D(1000)) == D(10)
    assert cap_to_headroom(D(8), D(5), D(100), D(1000)) == D(8)  # fits
    assert cap_to_headroom(D(-30), D(-5), D(100), D(1000)) == D(-10)  # shorts alike
    assert cap_to_headroom(D(-3), D(5), D(100), D(0)) == D(-3)  # reducing needs no room
    # A flip from +5 may go to at most -(5 + 10) = -15: a sell of 20.
    assert cap_to_headroom(D(-40), D(5), D(100), D(1000)) == D(-20)
    assert cap_to_headroom(D(30), D(5), D(100), D(0)) == 0  # no room: nothing
    assert cap_to_headroom(D(30), D(5), D(100), D(150), min_order_notional=D(200)) == 0  # 1 share is dust
    assert cap_to_headroom(D("3.7"), D(0), D(100), D(250), lot_size=D("0.5")) == D("2.5")
    # Over the limit already (room -300): a flip from +5 may only end at -2, a buy adds nothing.
    assert cap_to_headroom(D(-40), D(5), D(100), D(-300)) == D(-7)
    assert cap_to_headroom(D(10), D(5), D(100), D(-300)) == 0
