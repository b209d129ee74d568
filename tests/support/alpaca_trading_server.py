"""A loopback HTTP server speaking Alpaca's Trading API v2 wire format (orders, positions, account), for tests.

Routes: POST /v2/orders, GET /v2/orders?status=open|closed|all, GET /v2/orders:by_client_order_id,
GET /v2/orders/{id}, DELETE /v2/orders/{id} (204; 422 when not cancelable), GET /v2/positions, GET /v2/account.
Credentials are checked (401 with Alpaca's error JSON); a reused client_order_id gets 422
"client_order_id must be unique". Tests drive fills (`fill`), set prices, can make market orders fill at once
(`auto_fill`), and can script failures: `fail` answers with a status without acting; `drop_responses` acts on the
request and then closes the connection without answering (the lost-response case idempotency must survive).

    with AlpacaTradingServer() as server:
        broker = AlpacaBroker(server.credentials(), base_url=server.url, backoff_base_secs=0.001)
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from gpt_trader.data.sources.credentials import AlpacaCredentials

KEY_ID = "PKTRADINGKEY7Q2W9"
SECRET_KEY = "alpaca-trading-secret-Zx81-never-log-me"
OPEN_STATUSES = {"new", "partially_filled", "accepted", "pending_new"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


@dataclass
class _Script:
    remaining: int
    method: str | None
    path: str | None
    status: int | None  # None: drop the response after acting


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class AlpacaTradingServer:
    """Threaded stdlib server on 127.0.0.1 holding orders, positions and cash in memory."""

    def __init__(self, *, cash: Decimal = Decimal(100_000), auto_fill: bool = False) -> None:
        self._lock = threading.Lock()
        self.orders: dict[str, dict[str, Any]] = {}  # by order id, insertion = submission order
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed qty, avg price)
        self.prices: dict[str, Decimal] = {}
        self.cash = cash
        self.auto_fill = auto_fill
        self._scripts: list[_Script] = []
        self.requests: list[RecordedRequest] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> AlpacaTradingServer:
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @staticmethod
    def credentials() -> AlpacaCredentials:
        """The key pair this server accepts."""
        return AlpacaCredentials(key_id=SecretStr(KEY_ID), secret_key=SecretStr(SECRET_KEY))

    # --- test controls ---------------------------------------------------------------------------------------
    def fail(self, times: int, status: int, *, method: str | None = None, path: str | None = None) -> None:
        """Answer the next `times` matching requests with `status` (without acting on them)."""
        with self._lock:
            self._scripts.append(_Script(times, method, path, status))

    def drop_responses(self, times: int, *, method: str | None = None, path: str | None = None) -> None:
        """Act on the next `times` matching requests, then hang up without answering."""
        with self._lock:
            self._scripts.append(_Script(times, method, path, None))

    def set_price(self, symbol: str, price: Decimal) -> None:
        """The price market orders fill at with `auto_fill`, and positions are valued at."""
        with self._lock:
            self.prices[symbol] = price

    def set_position(self, symbol: str, qty: Decimal, avg_price: Decimal) -> None:
        """Put a position on the account directly (as if it pre-existed)."""
        with self._lock:
            self.positions[symbol] = (qty, avg_price)

    def fill(self, client_order_id: str, price: Decimal, qty: Decimal | None = None) -> dict[str, Any]:
        """Fill `qty` (default: the rest) of an open order at `price`; updates position and cash."""
        with self._lock:
            order = self._by_client_id(client_order_id)
            assert order is not None, f"no order {client_order_id}"
            self._fill_locked(order, price, qty)
            return dict(order)

    def orders_for(self, client_order_id: str) -> list[dict[str, Any]]:
        """All orders carrying this client id (more than one would be a double order)."""
        with self._lock:
            return [o for o in self.orders.values() if o["client_order_id"] == client_order_id]

    # --- state changes ---------------------------------------------------------------------------------------
    def _by_client_id(self, cid: str) -> dict[str, Any] | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == cid), None)

    def _fill_locked(self, order: dict[str, Any], price: Decimal, qty: Decimal | None) -> None:
        total, done = Decimal(order["qty"]), Decimal(order["filled_qty"])
        qty = total - done if qty is None else min(qty, total - done)
        avg = Decimal(order["filled_avg_price"]) if order["filled_avg_price"] else Decimal(0)
        new_done = done + qty
        order["filled_avg_price"] = _num((done * avg + qty * price) / new_done)
        order["filled_qty"] = _num(new_done)
        order["status"] = "filled" if new_done == total else "partially_filled"
        order["updated_at"] = _now()
        if new_done == total:
            order["filled_at"] = order["updated_at"]
        signed = qty if order["side"] == "buy" else -qty
        self.cash -= signed * price
        q, a = self.positions.get(order["symbol"], (Decimal(0), Decimal(0)))
        new_q = q + signed
        if new_q == 0:
            self.positions.pop(order["symbol"], None)
        elif q == 0 or (q > 0) == (signed > 0):
            self.positions[order["symbol"]] = (new_q, (abs(q) * a + abs(signed) * price) / abs(new_q))
        else:
            self.positions[order["symbol"]] = (new_q, a if abs(signed) <= abs(q) else price)

    # --- HTTP ------------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

            def do_DELETE(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _take_script(self, method: str, path: str) -> _Script | None:
        for script in self._scripts:
            if script.remaining > 0 and script.method in (None, method) and script.path in (None, path):
                script.remaining -= 1
                return script
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(RecordedRequest(h.command, parts.path, query, body))
            script = self._take_script(h.command, parts.path)
            if script is not None and script.status is not None:
                status, payload = script.status, {"code": script.status * 100000, "message": "scripted failure"}
            elif h.headers.get("APCA-API-KEY-ID") != KEY_ID or h.headers.get("APCA-API-SECRET-KEY") != SECRET_KEY:
                status, payload = 401, {"code": 40110000, "message": "request is not authorized"}
            else:
                status, payload = self._route(h.command, parts.path, query, body)
        if script is not None and script.status is None:
            h.close_connection = True  # acted on it; now lose the answer
            return
        data = b"" if status == 204 else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/v2/orders" and method == "POST":
            return self._create(body or {})
        if path == "/v2/orders" and method == "GET":
            status = query.get("status", "open")
            items = [
                o
                for o in self.orders.values()
                if status == "all" or (o["status"] in OPEN_STATUSES) == (status == "open")
            ]
            if query.get("direction", "desc") == "desc":
                items.reverse()
            return 200, items[: int(query.get("limit", "50"))]
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            order = self._by_client_id(query.get("client_order_id", ""))
            return (200, order) if order else (404, {"code": 40410000, "message": "order not found"})
        if path.startswith("/v2/orders/"):
            order = self.orders.get(path.rsplit("/", 1)[1])
            if order is None:
                return 404, {"code": 40410000, "message": "order not found"}
            if method == "GET":
                return 200, order
            if method == "DELETE":
                if order["status"] not in OPEN_STATUSES:
                    return 422, {"code": 42210000, "message": f'order is already in "{order["status"]}" state'}
                order["status"], order["canceled_at"] = "canceled", _now()
                return 204, None
        if path == "/v2/positions" and method == "GET":
            return 200, [self._position_json(s, q, a) for s, (q, a) in sorted(self.positions.items())]
        if path == "/v2/account" and method == "GET":
            equity = self.cash + sum((q * self.prices.get(s, a) for s, (q, a) in self.positions.items()), Decimal(0))
            return 200, {
                "id": "0d5b9e1c-5a2f-4d5e-9a9f-acc0c0ffee00",
                "account_number": "PA3TESTACCT",
                "status": "ACTIVE",
                "currency": "USD",
                "cash": _num(self.cash),
                "equity": _num(equity),
                "portfolio_value": _num(equity),
                "buying_power": _num(self.cash * 2),
                "pattern_day_trader": False,
                "trading_blocked": False,
            }
        return 404, {"message": "Not Found"}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if len(cid) > 48:
            return 422, {"code": 40010000, "message": "client_order_id must be no more than 48 characters"}
        if self._by_client_id(cid) is not None:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        try:
            qty = Decimal(str(body["qty"]))
            side, otype, tif, symbol = body["side"], body["type"], body["time_in_force"], body["symbol"]
        except (KeyError, ArithmeticError, ValueError):
            return 422, {"code": 40010000, "message": "invalid order request"}
        if qty <= 0 or side not in ("buy", "sell") or otype not in ("market", "limit"):
            return 422, {"code": 40010000, "message": "invalid order request"}
        if otype == "limit" and body.get("limit_price") is None:
            return 422, {"code": 40010000, "message": "limit_price is required for limit orders"}
        now = _now()
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "client_order_id": cid,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "canceled_at": None,
            "asset_class": "us_equity",
            "symbol": symbol,
            "qty": _num(qty),
            "notional": None,
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "order_type": otype,
            "type": otype,
            "side": side,
            "time_in_force": tif,
            "limit_price": body.get("limit_price"),
            "stop_price": None,
            "status": "new",
            "extended_hours": False,
        }
        self.orders[order["id"]] = order
        if self.auto_fill and otype == "market" and symbol in self.prices:
            self._fill_locked(order, self.prices[symbol], None)
        return 200, order

    def _position_json(self, symbol: str, qty: Decimal, avg: Decimal) -> dict[str, Any]:
        price = self.prices.get(symbol, avg)
        value, basis = qty * price, qty * avg
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "avg_entry_price": _num(avg),
            "qty": _num(qty),
            "qty_available": _num(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": _num(value),
            "cost_basis": _num(basis),
            "unrealized_pl": _num(value - basis),
            "current_price": _num(price),
        }
