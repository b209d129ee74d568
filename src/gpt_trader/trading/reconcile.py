"""Start-up reconciliation: make the local book and order list agree with the broker, which is the truth.

The broker may have filled, cancelled or accepted orders while we were down. Positions and cash are set to the
broker's; the quantity difference is booked as an adjustment, not a fill (we do not know its price), so the
realized P&L of a fill we missed is not reconstructed. Every difference fixed is reported with a machine-readable
`kind`, for the audit log and for alerts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from gpt_trader.trading.execution import Broker
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import BrokerOrder, OrderStatus, Position

log = logging.getLogger(__name__)


class DifferenceKind(StrEnum):
    """What disagreed."""

    POSITION = "position"
    CASH = "cash"
    ORDER_CLOSED = "order_closed"  # open locally, closed (filled/cancelled) at the broker
    ORDER_UNKNOWN = "order_unknown"  # open locally, never reached the broker
    ORDER_ADOPTED = "order_adopted"  # open at the broker, unknown locally


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement and how it was fixed."""

    kind: DifferenceKind
    key: str
    local: str
    broker: str
    message: str


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The differences fixed, the open orders to follow from now on, and order records to persist."""

    differences: tuple[Difference, ...]
    open_orders: tuple[BrokerOrder, ...]
    changed_orders: tuple[BrokerOrder, ...]

    @property
    def clean(self) -> bool:
        """True when local state already matched the broker."""
        return not self.differences


def reconcile(portfolio: Portfolio, broker: Broker, local_orders: list[BrokerOrder]) -> Reconciliation:
    """Align `portfolio` (in place) and the open orders with `broker`; returns what differed."""
    diffs: list[Difference] = []
    changed: list[BrokerOrder] = []
    remote_positions = broker.positions()
    for symbol in sorted(set(portfolio.positions) | set(remote_positions)):
        local, remote = portfolio.position(symbol), remote_positions.get(symbol, Position(symbol))
        if local.quantity != remote.quantity:
            diffs.append(
                Difference(
                    DifferenceKind.POSITION,
                    symbol,
                    str(local.quantity),
                    str(remote.quantity),
                    f"{symbol}: local quantity {local.quantity} != broker {remote.quantity}; took the broker's",
                )
            )
            portfolio.set_position(remote)
            if remote.quantity != 0:
                portfolio.mark(symbol, portfolio.marks.get(symbol, remote.avg_price))
    remote_cash: Decimal = broker.cash()
    if remote_cash != portfolio.cash:
        diffs.append(
            Difference(
                DifferenceKind.CASH,
                "cash",
                str(portfolio.cash),
                str(remote_cash),
                f"cash {portfolio.cash} != broker {remote_cash}; took the broker's",
            )
        )
        portfolio.cash = remote_cash

    remote_open = {o.client_order_id: o for o in broker.open_orders()}
    for mine in (o for o in local_orders if o.status.is_open):
        if mine.client_order_id in remote_open:
            continue
        found = broker.get_order(mine.client_order_id)
        if found is not None:
            diffs.append(
                Difference(
                    DifferenceKind.ORDER_CLOSED,
                    mine.client_order_id,
                    mine.status.value,
                    found.status.value,
                    f"order {mine.client_order_id} is {found.status} at the broker",
                )
            )
            changed.append(found)
        else:
            diffs.append(
                Difference(
                    DifferenceKind.ORDER_UNKNOWN,
                    mine.client_order_id,
                    mine.status.value,
                    "missing",
                    f"order {mine.client_order_id} never reached the broker; marked canceled",
                )
            )
            changed.append(replace(mine, status=OrderStatus.CANCELED))
    local_ids = {o.client_order_id for o in local_orders}
    for cid, remote_order in remote_open.items():
        if cid not in local_ids:
            diffs.append(
                Difference(
                    DifferenceKind.ORDER_ADOPTED,
                    cid,
                    "missing",
                    remote_order.status.value,
                    f"order {cid} is open at the broker but unknown locally; adopted",
                )
            )
            changed.append(remote_order)
    for d in diffs:
        log.warning("reconcile: [%s] %s", d.kind, d.message)
    return Reconciliation(tuple(diffs), tuple(remote_open.values()), tuple(changed))
