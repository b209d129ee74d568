"""Target position fraction -> order quantity, given equity, price, lot size and the position cap."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from gpt_trader.trading.types import ZERO, to_decimal


def round_to_lot(quantity: Decimal, lot_size: Decimal) -> Decimal:
    """`quantity` rounded toward zero to a whole number of lots (never trade more than asked)."""
    lots = (quantity / lot_size).to_integral_value(rounding=ROUND_DOWN)
    return (lots * lot_size).normalize() if lots else ZERO


def target_quantity(
    target_fraction: float,
    equity: Decimal,
    price: Decimal,
    *,
    lot_size: Decimal = Decimal(1),
    max_position_fraction: float = 1.0,
) -> Decimal:
    """Signed quantity worth `target_fraction` of `equity` at `price`, capped at `max_position_fraction`."""
    if price <= 0:
        raise ValueError(f"price must be positive to size a position, got {price}")
    if equity <= 0:
        return ZERO
    cap = abs(max_position_fraction)
    fraction = max(-cap, min(cap, target_fraction))
    return round_to_lot(to_decimal(fraction) * equity / price, lot_size)


def order_quantity(
    target_fraction: float,
    current_quantity: Decimal,
    equity: Decimal,
    price: Decimal,
    *,
    lot_size: Decimal = Decimal(1),
    max_position_fraction: float = 1.0,
    min_order_notional: Decimal = ZERO,
) -> Decimal:
    """Signed quantity to trade to move from `current_quantity` to the target; 0 when below the minimum notional."""
    target = target_quantity(
        target_fraction, equity, price, lot_size=lot_size, max_position_fraction=max_position_fraction
    )
    delta = round_to_lot(target - current_quantity, lot_size) if target != ZERO else -current_quantity
    if delta == 0 or abs(delta) * price < min_order_notional:
        return ZERO
    return delta


def cap_to_trade_limits(
    quantity: Decimal,
    price: Decimal,
    equity: Decimal,
    *,
    max_order_notional: Decimal,
    stop_loss_fraction: float | Decimal,
    max_loss_per_trade_fraction: float | Decimal,
    lot_size: Decimal = Decimal(1),
) -> Decimal:
    """Shrink an order to the per-trade limits the risk manager enforces, so a large target builds over bars.

    The notional is capped at `max_order_notional` and the loss at a `stop_loss_fraction` adverse move at
    `max_loss_per_trade_fraction` of equity; the sign is kept and the result rounded down to whole lots.
    """
    if quantity == 0 or price <= 0:
        return ZERO
    by_notional = max_order_notional / price
    by_loss = to_decimal(max_loss_per_trade_fraction) * equity / (to_decimal(stop_loss_fraction) * price)
    capped = min(abs(quantity), by_notional, by_loss)
    capped = round_to_lot(capped, lot_size)
    return capped if quantity > 0 else -capped


def cap_to_headroom(
    quantity: Decimal,
    held: Decimal,
    price: Decimal,
    headroom: Decimal,
    *,
    lot_size: Decimal = Decimal(1),
    min_order_notional: Decimal = ZERO,
) -> Decimal:
    """Shrink an order that adds exposure so the position it leaves is worth at most `headroom` more than `held`
    (the room the position and gross-exposure limits leave, see `RiskManager.headroom`; negative: less than
    `held`); 0 when what remains is below the minimum notional or would trade the other way. Orders that only
    reduce pass unchanged."""
    new = held + quantity
    if quantity == 0 or price <= 0 or abs(new) <= abs(held):
        return quantity
    limit = max(ZERO, abs(held) + headroom / price)
    if abs(new) <= limit:
        return quantity
    capped = round_to_lot(limit, lot_size) * (1 if new > 0 else -1)
    out = round_to_lot(capped - held, lot_size)
    if out == 0 or (out > 0) != (quantity > 0) or abs(out) * price < min_order_notional:
        return ZERO
    return out
