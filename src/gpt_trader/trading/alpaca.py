"""`AlpacaBroker`: the `Broker` protocol over Alpaca's Trading API v2 REST (paper endpoint by default).

Endpoints: POST /v2/orders, GET /v2/orders?status=open, GET /v2/orders:by_client_order_id, DELETE
/v2/orders/{id}, GET /v2/positions, GET /v2/account; keys in the APCA-API-KEY-ID / APCA-API-SECRET-KEY headers.

Idempotency: every order carries our deterministic `client_order_id`. A POST whose answer is lost (network
error, timeout, 5xx) may still have created the order, so before retrying we look the id up and return the order
if it exists; a 422 "client_order_id must be unique" likewise resolves to the existing order. Reads (GET) and
cancels retry on transient failures with exponential backoff (tenacity), mirroring the market-data client.
Fills are derived by polling: the growth of an order's `filled_qty` since the last poll is one fill, with id
`<order id>-<cumulative filled qty>` so a re-poll after a restart yields the same fill id.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from gpt_trader.trading.config import ExecutionConfig
from gpt_trader.trading.errors import BrokerError, OrderRejectedError
from gpt_trader.trading.types import (
    ZERO,
    BrokerOrder,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    to_decimal,
)

if TYPE_CHECKING:  # the data package is heavy to import; only its type is needed here
    from gpt_trader.data.sources.credentials import AlpacaCredentials

log = logging.getLogger(__name__)

PAPER_URL = "https://paper-api.alpaca.markets"
DUPLICATE_ID_MESSAGE = "client_order_id must be unique"
_STATUS = {
    "new": OrderStatus.NEW,
    "accepted": OrderStatus.NEW,
    "pending_new": OrderStatus.NEW,
    "accepted_for_bidding": OrderStatus.NEW,
    "pending_cancel": OrderStatus.NEW,
    "pending_replace": OrderStatus.NEW,
    "held": OrderStatus.NEW,
    "calculated": OrderStatus.NEW,
    "stopped": OrderStatus.NEW,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "done_for_day": OrderStatus.CANCELED,
    "replaced": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
    "suspended": OrderStatus.REJECTED,
}


class _Transient(Exception):
    """A response worth retrying (5xx, 429)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _Transient | httpx.TransportError)


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else to_decimal(str(value))


def parse_order(payload: dict[str, Any]) -> BrokerOrder:
    """An Alpaca order object -> `BrokerOrder` (pure; tested on the wire format)."""
    submitted = _ts(payload.get("submitted_at")) or _ts(payload.get("created_at")) or datetime.now(UTC)
    limit = _dec(payload.get("limit_price"))
    order_type = OrderType.LIMIT if payload.get("type") == "limit" else OrderType.MARKET
    order = Order(
        client_order_id=payload["client_order_id"],
        symbol=payload["symbol"],
        side=Side(payload["side"]),
        quantity=_dec(payload.get("qty")) or _dec(payload.get("filled_qty")) or Decimal("1e-9"),
        ts=submitted,
        type=order_type,
        limit_price=limit if order_type is OrderType.LIMIT else None,
        time_in_force=payload.get("time_in_force", "day"),
    )
    return BrokerOrder(
        order=order,
        id=payload["id"],
        status=_STATUS.get(payload.get("status", "new"), OrderStatus.NEW),
        filled_quantity=_dec(payload.get("filled_qty")) or ZERO,
        filled_avg_price=_dec(payload.get("filled_avg_price")),
        submitted_at=submitted,
        filled_at=_ts(payload.get("filled_at")),
    )


def parse_position(payload: dict[str, Any]) -> Position:
    """An Alpaca position object -> `Position`; shorts get a negative quantity whatever sign `qty` carries."""
    qty = abs(to_decimal(str(payload["qty"])))
    if payload.get("side") == "short":
        qty = -qty
    return Position(payload["symbol"], qty, to_decimal(str(payload["avg_entry_price"])))


def order_body(order: Order) -> dict[str, Any]:
    """The POST /v2/orders JSON for `order` (decimals as strings, as Alpaca documents them)."""
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": format(order.quantity.normalize(), "f"),
        "side": order.side.value,
        "type": order.type.value,
        "time_in_force": order.time_in_force,
        "client_order_id": order.client_order_id,
    }
    if order.limit_price is not None:
        body["limit_price"] = format(order.limit_price.normalize(), "f")
    return body


class AlpacaBroker:
    """Alpaca Trading API v2 client implementing `Broker`; close it (or use `with`) to release connections."""

    def __init__(
        self,
        credentials: AlpacaCredentials,
        *,
        base_url: str = PAPER_URL,
        timeout_secs: float = 10.0,
        max_retries: int = 3,
        backoff_base_secs: float = 0.5,
        backoff_max_secs: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._credentials = credentials
        self._sleep = sleep
        self._backoff_base, self._backoff_max = backoff_base_secs, backoff_max_secs
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout_secs))
        # Last seen state of every order we placed or adopted; fills are the growth of filled_qty.
        self._tracked: dict[str, BrokerOrder] = {}

    @classmethod
    def from_config(
        cls, config: ExecutionConfig, credentials: AlpacaCredentials, *, sleep: Callable[[float], None] = time.sleep
    ) -> AlpacaBroker:
        """Build from the `trading.execution` config section."""
        return cls(
            credentials,
            base_url=config.alpaca_base_url,
            timeout_secs=config.timeout_secs,
            max_retries=config.max_retries,
            backoff_base_secs=config.backoff_base_secs,
            backoff_max_secs=config.backoff_max_secs,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    # --- Broker protocol -------------------------------------------------------------------------------------
    def submit(self, order: Order) -> BrokerOrder:
        """POST the order; after a lost answer, find it by client id before trying again (never a double order)."""
        body = order_body(order)
        last_error = "no attempt made"
        for attempt in range(1, self.max_retries + 2):
            try:
                response = self._send("POST", "/v2/orders", json=body)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 300:
                    return self._track(parse_order(response.json()))
                message = self._message(response)
                if status == 422 and DUPLICATE_ID_MESSAGE in message:
                    existing = self.get_order(order.client_order_id)
                    if existing is not None:
                        return existing
                if status < 500 and status != 429:
                    raise OrderRejectedError(
                        f"alpaca: order {order.client_order_id} ({order.side} {order.quantity} {order.symbol}) "
                        f"refused with HTTP {status}: {message}",
                        status=status,
                    )
                last_error = f"HTTP {status}: {message}"
            # The order may exist although we saw no answer: look before posting again.
            existing = self.get_order(order.client_order_id)
            if existing is not None:
                log.warning(
                    "alpaca: POST %s got %s but the order exists; not resubmitting", order.client_order_id, last_error
                )
                return existing
            if attempt <= self.max_retries:
                wait = self._backoff_secs(attempt)
                log.warning(
                    "alpaca: POST /v2/orders failed (%s), retry %d/%d in %.2fs",
                    last_error,
                    attempt,
                    self.max_retries,
                    wait,
                )
                self._sleep(wait)
        raise BrokerError(
            f"alpaca: POST {self.base_url}/v2/orders for {order.client_order_id} failed after "
            f"{self.max_retries + 1} attempt(s): {last_error}"
        )

    def cancel(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}; an order that is no longer cancelable (422) is left alone."""
        response = self._request("DELETE", f"/v2/orders/{order_id}", allow={404, 422})
        if response.status_code == 404:
            message = self._message(response)
            raise BrokerError(f"alpaca: no order {order_id} to cancel (HTTP 404): {message}", status=404)

    def get_order(self, client_order_id: str) -> BrokerOrder | None:
        """GET /v2/orders:by_client_order_id; None on 404."""
        found = self._lookup(client_order_id)
        return self._track(found) if found is not None else None

    def _lookup(self, client_order_id: str) -> BrokerOrder | None:
        response = self._request(
            "GET", "/v2/orders:by_client_order_id", params={"client_order_id": client_order_id}, allow={404}
        )
        return None if response.status_code == 404 else parse_order(response.json())

    def open_orders(self) -> list[BrokerOrder]:
        """GET /v2/orders?status=open (up to Alpaca's maximum page of 500)."""
        response = self._request("GET", "/v2/orders", params={"status": "open", "limit": 500, "direction": "asc"})
        return [self._track(parse_order(item)) for item in response.json()]

    def positions(self) -> dict[str, Position]:
        """GET /v2/positions."""
        response = self._request("GET", "/v2/positions")
        return {p.symbol: p for p in (parse_position(item) for item in response.json()) if p.quantity != 0}

    def cash(self) -> Decimal:
        """GET /v2/account -> cash."""
        return to_decimal(str(self.account()["cash"]))

    def account(self) -> dict[str, Any]:
        """The raw account object (cash, equity, buying_power, status, ...)."""
        result: dict[str, Any] = self._request("GET", "/v2/account").json()
        return result

    def poll_fills(self) -> list[Fill]:
        """Re-read every tracked open order and turn the growth of its `filled_qty` into fills."""
        fills: list[Fill] = []
        for cid, before in list(self._tracked.items()):
            if not before.status.is_open:
                continue
            now = self._lookup(cid)
            if now is None:
                continue
            fill = fill_between(before, now)
            if fill is not None:
                fills.append(fill)
            self._tracked[cid] = now
        return fills

    def track(self, orders: list[BrokerOrder]) -> None:
        """Follow orders placed by an earlier process (after a restart) from the fill level already booked."""
        for order in orders:
            self._tracked[order.client_order_id] = order

    # --- HTTP ------------------------------------------------------------------------------------------------
    def _track(self, order: BrokerOrder) -> BrokerOrder:
        # First sight: baseline at zero filled, so a fill that happened before our first poll is still reported.
        if order.client_order_id not in self._tracked:
            self._tracked[order.client_order_id] = replace(
                order, status=OrderStatus.NEW, filled_quantity=ZERO, filled_avg_price=None, filled_at=None
            )
        return order

    def _headers(self) -> dict[str, str]:
        # Materialised per request so no long-lived object holds the plain secret.
        return {
            "APCA-API-KEY-ID": self._credentials.key_id.get_secret_value(),
            "APCA-API-SECRET-KEY": self._credentials.secret_key.get_secret_value(),
        }

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, path, headers=self._headers(), **kwargs)

    def _request(
        self, method: str, path: str, *, allow: frozenset[int] | set[int] = frozenset(), **kwargs: Any
    ) -> httpx.Response:
        """An idempotent call (GET, DELETE) with retries on transient failures; other 4xx raise `BrokerError`."""

        def once() -> httpx.Response:
            response = self._send(method, path, **kwargs)
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=lambda state: self._backoff_secs(state.attempt_number),
            retry=retry_if_exception(_is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(once)
        except _Transient as exc:
            raise BrokerError(
                f"alpaca: {method} {self.base_url}{path} failed with HTTP {exc.response.status_code} after "
                f"{self.max_retries + 1} attempt(s): {self._message(exc.response)}",
                status=exc.response.status_code,
            ) from None
        except httpx.TransportError as exc:
            raise BrokerError(f"alpaca: {method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400 and response.status_code not in allow:
            hint = " (check APCA_API_KEY_ID / APCA_API_SECRET_KEY)" if response.status_code in (401, 403) else ""
            raise BrokerError(
                f"alpaca: {method} {self.base_url}{path} failed with HTTP {response.status_code}: "
                f"{self._message(response)}{hint}",
                status=response.status_code,
            )
        return response

    def _backoff_secs(self, attempt: int) -> float:
        # Exponential with jitter (as tenacity's wait_exponential_jitter), callable outside a Retrying loop.
        return min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)) + random.uniform(0, self._backoff_base)

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            payload = response.json()
        except ValueError:
            return response.text[:300]
        if isinstance(payload, dict) and "message" in payload:
            return str(payload["message"])
        return str(payload)[:300]


def fill_between(before: BrokerOrder, now: BrokerOrder) -> Fill | None:
    """The fill implied by an order's `filled_qty` growing from `before` to `now` (None if it did not grow).

    Its price makes the cumulative notional add up: (q₁·p₁ − q₀·p₀) / (q₁ − q₀). Alpaca equities are
    commission-free, so the commission is zero.
    """
    q0, q1 = before.filled_quantity, now.filled_quantity
    if q1 <= q0 or now.filled_avg_price is None:
        return None
    p0 = before.filled_avg_price or ZERO
    price = (q1 * now.filled_avg_price - q0 * p0) / (q1 - q0)
    return Fill(
        fill_id=f"{now.id}-{format(q1.normalize(), 'f')}",
        order_id=now.id,
        client_order_id=now.client_order_id,
        symbol=now.order.symbol,
        side=now.order.side,
        quantity=q1 - q0,
        price=price,
        commission=ZERO,
        ts=now.filled_at or now.submitted_at or datetime.now(UTC),
    )
