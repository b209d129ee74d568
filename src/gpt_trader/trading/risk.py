"""Pre-trade risk checks and the kill-switch.

`RiskManager.check_order` decides on one order given the portfolio, the order's reference price and the clock;
every rejection carries a machine-readable `RejectCode` and a human message, and is logged. `check_limits`
watches equity: a breach of the daily loss limit or of the maximum drawdown halts trading (latched until
`reset_kill_switch`) and returns market orders that flatten every position; those orders bypass `check_order`
on purpose, since the kill-switch must be able to act when everything else is refused.

Orders placed but not filled yet count: the caller hands the broker's open orders to `begin_batch` before a
bar's orders, and every order approved after it adds to that pending book, so the position and gross-exposure
limits hold for the book as it will be once everything fills, not per order (fifty simultaneous orders that each
fit would otherwise breach the gross limit together). `headroom` tells sizing how much more exposure fits.

An external market-condition input (the scaling classifier, an operator) sets ACTIVE / REDUCING / HALTED
through `set_state`; REDUCING lets only orders that shrink a position through. The stale-data guard refuses new
exposure in a symbol whose last bar is too old or whose feed the data layer reported down (`set_feed_status`).
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from gpt_trader.core.clock import Clock
from gpt_trader.trading.config import RiskConfig
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.types import ZERO, BrokerOrder, Order, OrderType, Side, TradingState, to_decimal

log = logging.getLogger(__name__)


class RejectCode(StrEnum):
    """Why an order was refused (stable strings for metrics, alerts and the audit log)."""

    HALTED = "halted"
    REDUCE_ONLY = "reduce_only"
    STALE_DATA = "stale_data"
    NO_PRICE = "no_price"
    MAX_POSITION = "max_position"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_LOSS_PER_TRADE = "max_loss_per_trade"
    RATE_LIMIT = "rate_limit"


class HaltReason(StrEnum):
    """Why trading stopped."""

    DAILY_LOSS = "daily_loss_limit"
    MAX_DRAWDOWN = "max_drawdown"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One failed rule: `code` for machines, `message` for people."""

    code: RejectCode
    message: str


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The verdict on one order: approved when no rule failed."""

    order: Order
    rejections: tuple[Rejection, ...] = ()

    @property
    def approved(self) -> bool:
        """True when every rule passed."""
        return not self.rejections

    @property
    def codes(self) -> tuple[RejectCode, ...]:
        """The codes of the failed rules."""
        return tuple(r.code for r in self.rejections)


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """A kill-switch trip: why, and the orders that flatten the book."""

    reason: HaltReason
    message: str
    flatten_orders: tuple[Order, ...]


def is_risk_reducing(current: Decimal, signed_quantity: Decimal) -> bool:
    """Whether trading `signed_quantity` shrinks |position| without flipping its side."""
    new = current + signed_quantity
    return current != 0 and abs(new) < abs(current) and (new == 0 or (new > 0) == (current > 0))


class RiskManager:
    """Stateful guard over the order flow: limits, trading state, kill-switch, rate limit and stale data."""

    def __init__(self, config: RiskConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        # The limits as decimals once: every order of every bar is checked against them.
        self._max_order_notional = to_decimal(config.max_order_notional_usd)
        self._max_position_fraction = to_decimal(config.max_position_fraction)
        self._max_gross_exposure = to_decimal(config.max_gross_exposure)
        self._stop_loss_fraction = to_decimal(config.stop_loss_fraction)
        self._max_loss_per_trade_fraction = to_decimal(config.max_loss_per_trade_fraction)
        self.state = TradingState.ACTIVE
        self.halt_reason: HaltReason | None = None
        self._killed = False
        self._submissions: deque[datetime] = deque()
        self._last_bar: dict[str, datetime] = {}
        self._bar_times: deque[datetime] = deque(maxlen=4096)
        self._feed_down: dict[str, str] = {}  # symbol -> why its feed is down
        self._peak_equity: Decimal | None = None
        self._day: date | None = None
        self._day_start_equity: Decimal | None = None
        # Within a batch (`begin_batch` .. `end_batch`): signed quantity still to fill per symbol, and the gross
        # exposure it adds at the reference prices. Outside one, orders are checked against the positions alone.
        self._pending: dict[str, Decimal] | None = None
        self._pending_gross = ZERO

    # --- inputs ----------------------------------------------------------------------------------------------
    def set_state(self, state: TradingState, reason: str = "") -> None:
        """External market-condition input; cannot lift a kill-switch halt (use `reset_kill_switch`)."""
        if self._killed and state is not TradingState.HALTED:
            log.warning("risk: ignoring request to set %s while the kill-switch is latched (%s)", state, reason)
            return
        if state is not self.state:
            log.warning("risk: trading state %s -> %s (%s)", self.state, state, reason or "external")
        self.state = state
        self.halt_reason = HaltReason.EXTERNAL if state is TradingState.HALTED and not self._killed else None

    def reset_kill_switch(self, *, equity: Decimal) -> None:
        """A person's decision to trade again: unlatch, go ACTIVE, and restart peak/day baselines at `equity`."""
        self._killed = False
        self.state = TradingState.ACTIVE
        self.halt_reason = None
        self._peak_equity = equity
        self._day = self.clock.now().date()
        self._day_start_equity = equity
        log.warning("risk: kill-switch reset at equity %s", equity)

    def on_bar(self, symbol: str, bar_ts: datetime) -> None:
        """Note the newest bar time for `symbol` (feeds the stale-data guard)."""
        last = self._last_bar.get(symbol)
        if last is None or bar_ts > last:
            self._last_bar[symbol] = bar_ts
        if not self._bar_times or bar_ts > self._bar_times[-1]:
            self._bar_times.append(bar_ts)  # the bar times any symbol reached, newest last

    def set_feed_status(self, symbol: str, healthy: bool, reason: str = "") -> None:
        """The data layer's word on `symbol`'s feed: while down, new exposure in it is refused as stale."""
        if healthy:
            self._feed_down.pop(symbol, None)
        else:
            self._feed_down[symbol] = reason or "feed reported down"

    def last_bar(self, symbol: str) -> datetime | None:
        """The newest bar time noted for `symbol` (None before its first bar)."""
        return self._last_bar.get(symbol)

    def stale_reason(self, symbol: str) -> str | None:
        """Why `symbol`'s data cannot be traded on now (feed down, no bar yet, last bar too old), else None."""
        down = self._feed_down.get(symbol)
        if down is not None:
            return f"{symbol}: feed down ({down})"
        last = self._last_bar.get(symbol)
        if last is None:
            return f"{symbol}: no bar seen yet"
        now = self.clock.now()
        age = (now - last).total_seconds()
        limit = self.config.max_bar_age_secs
        # While other symbols' bars keep coming, one bar behind them is the ordinary lag of a late symbol (and
        # with daily bars a weekend is one bar, however many seconds it spans): then only more than
        # `max_missed_bars` missed bar times make the data stale. When no bar came at all for `limit` (the clock
        # runs on without bars), the age alone decides.
        missed = len(self._bar_times) - bisect.bisect_right(self._bar_times, last)
        all_quiet = not self._bar_times or (now - self._bar_times[-1]).total_seconds() > limit
        if age > limit and (all_quiet or missed > self.config.max_missed_bars):
            return (
                f"{symbol}: last bar {last.isoformat()} is {age:.0f}s old and {missed} bars behind "
                f"(max_bar_age_secs={self.config.max_bar_age_secs:g}, max_missed_bars={self.config.max_missed_bars})"
            )
        return None

    def seed(self, *, peak_equity: Decimal, day_start_equity: Decimal, day: date) -> None:
        """Restore the drawdown peak and the day's opening equity after a restart (from the equity curve)."""
        self._peak_equity, self._day_start_equity, self._day = peak_equity, day_start_equity, day

    @property
    def killed(self) -> bool:
        """Whether the kill-switch is latched."""
        return self._killed

    # --- pending orders --------------------------------------------------------------------------------------
    def begin_batch(self, open_orders: Iterable[BrokerOrder], portfolio: Portfolio) -> None:
        """Start a bar's orders from the broker's open ones: until `end_batch`, what they and every approved order
        will add counts against the limits."""
        self._pending, self._pending_gross = {}, ZERO
        for placed in open_orders:
            order = placed.order
            price = portfolio.mark_price(order.symbol)
            self._add_pending(order.symbol, placed.remaining * order.side.sign, price, portfolio)

    def end_batch(self) -> None:
        """Back to checking orders against the positions alone (the batch's orders are the broker's now)."""
        self._pending, self._pending_gross = None, ZERO

    def held(self, symbol: str, portfolio: Portfolio) -> Decimal:
        """The position in `symbol` once its pending orders fill."""
        pending = self._pending.get(symbol, ZERO) if self._pending is not None else ZERO
        return portfolio.quantity(symbol) + pending

    def headroom(self, symbol: str, price: Decimal, portfolio: Portfolio) -> Decimal:
        """How much more |position value| in `symbol` the position and gross-exposure limits allow; negative when
        the book is over one already (prices moved), i.e. by how much the position would have to shrink."""
        equity = portfolio.equity()
        held_value = abs(self.held(symbol, portfolio)) * price
        if equity <= 0:
            return -held_value
        by_position = self._max_position_fraction * equity - held_value
        by_gross = self._max_gross_exposure * equity - (portfolio.gross_exposure() + self._pending_gross)
        return min(by_position, by_gross)

    def _add_pending(self, symbol: str, signed: Decimal, price: Decimal, portfolio: Portfolio) -> None:
        if self._pending is None:
            return
        held = self.held(symbol, portfolio)
        self._pending[symbol] = self._pending.get(symbol, ZERO) + signed
        self._pending_gross += (abs(held + signed) - abs(held)) * price

    # --- pre-trade check -------------------------------------------------------------------------------------
    def check_order(self, order: Order, portfolio: Portfolio, price: Decimal | None = None) -> RiskDecision:
        """Approve or reject `order` against every rule, pending orders counted as filled (in a batch); approval
        counts toward the rate limit and, in a batch, adds the order to the pending ones."""
        price = price if price is not None else portfolio.marks.get(order.symbol)
        if price is None and order.limit_price is not None:
            price = order.limit_price
        current = self.held(order.symbol, portfolio)
        reducing = is_risk_reducing(current, order.signed_quantity)
        rejections = [*self._state_rules(order, reducing), *self._stale_rule(order, reducing)]
        if price is None or price <= 0:
            rejections.append(Rejection(RejectCode.NO_PRICE, f"{order.symbol}: no reference price to value the order"))
        elif not reducing:
            rejections += self._exposure_rules(order, portfolio, price, current)
        rejections += self._rate_rule()
        decision = RiskDecision(order, tuple(rejections))
        if decision.approved:
            self._submissions.append(self.clock.now())
            if price is not None and price > 0:
                self._add_pending(order.symbol, order.signed_quantity, price, portfolio)
        else:
            for r in decision.rejections:
                log.warning("risk: rejected %s [%s] %s", order.client_order_id, r.code, r.message)
        return decision

    def _state_rules(self, order: Order, reducing: bool) -> list[Rejection]:
        if self.state is TradingState.HALTED:
            why = self.halt_reason or HaltReason.EXTERNAL
            return [Rejection(RejectCode.HALTED, f"trading is halted ({why}); {order.symbol} order refused")]
        if self.state is TradingState.REDUCING and not reducing:
            return [
                Rejection(
                    RejectCode.REDUCE_ONLY,
                    f"only risk-reducing orders are allowed; {order.side} {order.quantity} {order.symbol} "
                    "would open or grow a position",
                )
            ]
        return []

    def _stale_rule(self, order: Order, reducing: bool) -> list[Rejection]:
        # Reducing risk on old data is still safer than holding it, so the guard only blocks new exposure.
        if reducing:
            return []
        reason = self.stale_reason(order.symbol)
        return [] if reason is None else [Rejection(RejectCode.STALE_DATA, reason)]

    def _exposure_rules(self, order: Order, portfolio: Portfolio, price: Decimal, current: Decimal) -> list[Rejection]:
        c = self.config
        out: list[Rejection] = []
        equity = portfolio.equity()
        exec_price = order.limit_price if order.type is OrderType.LIMIT and order.limit_price else price
        notional = order.quantity * exec_price
        if notional > self._max_order_notional:
            out.append(
                Rejection(
                    RejectCode.MAX_ORDER_NOTIONAL,
                    f"{order.symbol}: order notional {notional:.2f} > "
                    f"max_order_notional_usd {c.max_order_notional_usd:g}",
                )
            )
        new_value = abs(current + order.signed_quantity) * price
        if equity <= 0 or new_value > self._max_position_fraction * equity:
            out.append(
                Rejection(
                    RejectCode.MAX_POSITION,
                    f"{order.symbol}: position value {new_value:.2f} would exceed "
                    f"{c.max_position_fraction:g} x equity {equity:.2f}",
                )
            )
        # The book once pending orders fill, with this symbol's part (`current` includes its pending) replaced.
        gross = (
            portfolio.gross_exposure() + self._pending_gross - abs(current) * portfolio.mark_price(order.symbol)
            + new_value
        )  # fmt: skip
        if equity <= 0 or gross > self._max_gross_exposure * equity:
            out.append(
                Rejection(
                    RejectCode.MAX_GROSS_EXPOSURE,
                    f"gross exposure {gross:.2f} would exceed {c.max_gross_exposure:g} x equity {equity:.2f}",
                )
            )
        # Loss at stop on the exposure this order adds: |added qty| · price · stop distance.
        new_abs = abs(current + order.signed_quantity)
        added = new_abs if _flips(current, order) else new_abs - abs(current)
        loss_at_stop = max(added, Decimal(0)) * price * self._stop_loss_fraction
        if equity <= 0 or loss_at_stop > self._max_loss_per_trade_fraction * equity:
            out.append(
                Rejection(
                    RejectCode.MAX_LOSS_PER_TRADE,
                    f"{order.symbol}: loss at a {c.stop_loss_fraction:.1%} stop is {loss_at_stop:.2f}, over "
                    f"{c.max_loss_per_trade_fraction:.1%} of equity {equity:.2f}",
                )
            )
        return out

    def _rate_rule(self) -> list[Rejection]:
        now = self.clock.now()
        window = timedelta(seconds=self.config.order_window_secs)
        while self._submissions and now - self._submissions[0] >= window:
            self._submissions.popleft()
        if len(self._submissions) >= self.config.max_orders_per_window:
            return [
                Rejection(
                    RejectCode.RATE_LIMIT,
                    f"{len(self._submissions)} orders in the last {self.config.order_window_secs:g}s "
                    f"(max_orders_per_window={self.config.max_orders_per_window})",
                )
            ]
        return []

    # --- kill-switch -----------------------------------------------------------------------------------------
    def check_limits(self, portfolio: Portfolio, *, client_order_prefix: str = "kill") -> KillSwitch | None:
        """Update the peak and the day's baseline; trip the kill-switch on a daily-loss or drawdown breach.

        Returns the trip (once, when it happens) with flattening orders; None otherwise.
        """
        now = self.clock.now()
        equity = portfolio.equity()
        if self._day != now.date() or self._day_start_equity is None:
            self._day, self._day_start_equity = now.date(), equity
        self._peak_equity = equity if self._peak_equity is None else max(self._peak_equity, equity)
        if self._killed:
            return None
        c = self.config
        daily_loss = (self._day_start_equity - equity) / self._day_start_equity if self._day_start_equity > 0 else 0
        drawdown = (self._peak_equity - equity) / self._peak_equity if self._peak_equity > 0 else 0
        if daily_loss >= to_decimal(c.daily_loss_limit_fraction):
            reason = HaltReason.DAILY_LOSS
            message = f"daily loss {daily_loss:.2%} >= limit {c.daily_loss_limit_fraction:.2%}"
        elif drawdown >= to_decimal(c.max_drawdown_fraction):
            reason = HaltReason.MAX_DRAWDOWN
            message = f"drawdown {drawdown:.2%} from peak {self._peak_equity:.2f} >= {c.max_drawdown_fraction:.2%}"
        else:
            return None
        self._killed = True
        self.state = TradingState.HALTED
        self.halt_reason = reason
        stamp = now.strftime("%Y%m%dT%H%M%S")
        orders = tuple(
            Order(
                client_order_id=f"{client_order_prefix}-{symbol}-{stamp}"[:48],
                symbol=symbol,
                side=Side.SELL if pos.quantity > 0 else Side.BUY,
                quantity=abs(pos.quantity),
                ts=now,
            )
            for symbol, pos in sorted(portfolio.positions.items())
        )
        log.critical("risk: KILL-SWITCH %s: %s; flattening %d position(s)", reason, message, len(orders))
        return KillSwitch(reason, message, orders)


def _flips(current: Decimal, order: Order) -> bool:
    new = current + order.signed_quantity
    return current != 0 and new != 0 and (new > 0) != (current > 0)
