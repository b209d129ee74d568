"""A loopback HTTP server speaking the REST wire formats of Alpaca, Binance and Polygon, for tests.

It serves the recorded pages under tests/fixtures/providers, implements each provider's pagination
(Alpaca `page_token`, Binance `startTime`/`endTime`/`limit`, Polygon `next_url` cursors), checks credentials the
way each provider does (Alpaca 403, Polygon 401, Binance 401 for a bad optional key) with the provider's error
JSON, can be scripted to fail (429/418 with Retry-After, 5xx, slow responses) a given number of times, and
records every request so tests can assert on retries, headers and query parameters.

Besides the recorded pages it serves any bar series a test hands it (`serve_bars`, e.g. the bundled real bars a
local exchange is replaying), filtered by the request's range and paged as the provider does, so a pipeline's
backfill can be checked against the true bars.

    with ProviderServer() as server:
        source = AlpacaSource(server.provider_config(), server.alpaca_credentials())
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from gpt_trader.data.config import ProviderConfig
from gpt_trader.data.sources.credentials import AlpacaCredentials

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
POLYGON_ORIGIN = "https://api.polygon.io"

# Test-only credentials the server accepts; distinctive so a leak is easy to grep for.
ALPACA_KEY_ID = "PKTESTKEYID7Q2W9"
ALPACA_SECRET_KEY = "alpaca-secret-Zx81-never-log-me"
POLYGON_API_KEY = "polygon-key-Qm42-never-log-me"
BINANCE_API_KEY = "binance-key-Vr55-never-log-me"

BINANCE_INTERVALS = {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
_POLYGON_AGGS = re.compile(
    r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>\d+)/(?P<span>[a-z]+)/(?P<frm>[^/]+)/(?P<to>[^/]+)$"
)
_ALPACA_STOCK_BARS = re.compile(r"^/v2/stocks/(?P<symbol>[^/]+)/bars$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    def param(self, name: str) -> str | None:
        """A query parameter's value, or None."""
        return self.query.get(name)


@dataclass
class _Scripted:
    """A canned failure answered to the next `remaining` matching requests."""

    remaining: int
    status: int
    provider: str | None
    retry_after: str | None = None
    delay_secs: float = 0.0
    after: int = 0  # matching requests to let through before failing


@dataclass
class _Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _load(*parts: str) -> Any:
    return json.loads((FIXTURES.joinpath(*parts)).read_text())


def _provider_of(path: str) -> str:
    if path.startswith("/api/v3/"):
        return "binance"
    if path.startswith("/v2/aggs/"):
        return "polygon"
    return "alpaca"


def _request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class SeriesBar:
    """One bar of a served series: open time in epoch milliseconds (UTC) and OHLCV."""

    t_ms: int
    o: float
    h: float
    low: float
    c: float
    v: float


def series_from_frame(frame: Any) -> list[SeriesBar]:
    """A polars frame in `BAR_SCHEMA` (ts, open, high, low, close, volume) as served bars."""
    ts = frame["ts"].dt.epoch("ms").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    return [SeriesBar(t, *map(float, row)) for t, *row in zip(ts, *cols, strict=True)]


def _rfc3339_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def _alpaca_bar(b: SeriesBar) -> dict[str, Any]:
    """Alpaca's bar object: RFC 3339 open time, OHLCV, trade count and VWAP."""
    sec, ms = divmod(b.t_ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + (f".{ms:03d}Z" if ms else "Z")
    return {"t": stamp, "o": b.o, "h": b.h, "l": b.low, "c": b.c, "v": b.v, "n": 0, "vw": b.c}


def _error_body(provider: str, status: int) -> Any:
    """The provider's own error JSON for a scripted status."""
    if provider == "binance":
        if status == 429:
            return {
                "code": -1003,
                "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per "
                "minute. Please use WebSocket Streams for live updates to avoid polling the API.",
            }
        if status == 418:
            return {
                "code": -1003,
                "msg": "Way too much request weight used; IP banned until 1704067800000. "
                "Please use WebSocket Streams for live updates to avoid bans.",
            }
        return {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
    if provider == "polygon":
        if status == 429:
            return {
                "status": "ERROR",
                "request_id": _request_id(),
                "error": "You've exceeded the maximum requests "
                "per minute, please wait or upgrade your subscription to continue. https://polygon.io/pricing",
            }
        return {"status": "ERROR", "request_id": _request_id(), "error": "Internal Server Error"}
    if status == 429:
        return {"message": "too many requests."}
    return {"message": "internal server error occurred"}


class ProviderServer:
    """Threaded stdlib HTTP server on 127.0.0.1 (ephemeral port) serving all three providers' routes."""

    def __init__(self, fixtures: Path = FIXTURES) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: list[_Scripted] = []
        self._alpaca_pages = {
            "AAPL": [_load("alpaca", "aapl_1day_page1.json"), _load("alpaca", "aapl_1day_page2.json")]
        }
        self._alpaca_crypto = {"BTC/USD": [_load("alpaca", "btcusd_1hour.json")]}
        self._polygon_pages = {
            "AAPL": [_load("polygon", "aapl_1day_page1.json"), _load("polygon", "aapl_1day_page2.json")]
        }
        self._binance_klines = {("BTCUSDT", "1h"): _load("binance", "btcusdt_1h.json")}
        self._series: dict[tuple[str, str], list[SeriesBar]] = {}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        port = self._http.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> ProviderServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.01,), name="provider-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- configuration helpers for tests ---------------------------------------------------------------------
    def provider_config(self, **overrides: Any) -> ProviderConfig:
        """A ProviderConfig pointing every provider here, with tiny backoff so retries cost milliseconds."""
        values: dict[str, Any] = {
            "alpaca_url": self.url,
            "binance_url": self.url,
            "polygon_url": self.url,
            "timeout_secs": 5.0,
            "max_retries": 3,
            "backoff_base_secs": 0.001,
            "backoff_max_secs": 0.01,
        }
        values.update(overrides)
        return ProviderConfig(**values)

    @staticmethod
    def alpaca_credentials() -> AlpacaCredentials:
        """The key pair this server accepts."""
        return AlpacaCredentials(key_id=SecretStr(ALPACA_KEY_ID), secret_key=SecretStr(ALPACA_SECRET_KEY))

    # --- scripting and inspection ----------------------------------------------------------------------------
    def fail(
        self,
        times: int,
        status: int,
        *,
        retry_after: str | float | None = None,
        provider: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer `times` requests (of `provider`, or any) with `status` and the provider's error JSON,
        after letting `after` of them through (to fail mid-pagination)."""
        with self._lock:
            self._scripts.append(
                _Scripted(times, status, provider, None if retry_after is None else str(retry_after), after=after)
            )

    def delay(self, times: int, secs: float, *, provider: str | None = None) -> None:
        """Stall the next `times` requests for `secs` before answering normally (to provoke client timeouts)."""
        with self._lock:
            self._scripts.append(_Scripted(times, 0, provider, delay_secs=secs))

    def serve_bars(self, provider: Literal["alpaca", "polygon"], symbol: str, bars: list[SeriesBar]) -> None:
        """Serve `bars` as `symbol`'s history on `provider`'s bars route (Alpaca /v2/stocks/{symbol}/bars, Polygon
        aggregates), whatever timeframe is asked for: the test serves bars of the timeframe it streams."""
        with self._lock:
            self._series[(provider, symbol)] = sorted(bars, key=lambda b: b.t_ms)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        """Requests routed to one provider."""
        return [r for r in self.requests if r.provider == provider]

    # --- request handling ------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler

    def _take_script(self, provider: str) -> _Scripted | None:
        with self._lock:
            for script in self._scripts:
                if script.remaining > 0 and script.provider in (None, provider):
                    if script.after > 0:
                        script.after -= 1
                        continue
                    script.remaining -= 1
                    return script
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        provider = _provider_of(parts.path)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    provider, handler.command, parts.path, query, {k: v for k, v in handler.headers.items()}
                )
            )
        script = self._take_script(provider)
        if script is not None and script.delay_secs:
            time.sleep(script.delay_secs)
            script = None
        if script is not None:
            headers = {"Retry-After": script.retry_after} if script.retry_after is not None else {}
            response = _Response(script.status, _error_body(provider, script.status), headers)
        else:
            response = self._route(parts.path, query, handler.headers)
        body = json.dumps(response.body).encode()
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def _route(self, path: str, query: dict[str, str], headers: Any) -> _Response:
        if path == "/api/v3/klines":
            return self._binance_klines_route(query, headers)
        if match := _POLYGON_AGGS.match(path):
            if ("polygon", match["ticker"]) in self._series:
                return self._polygon_series_route(match, headers)
            return self._polygon_route(match["ticker"], query, headers)
        if match := _ALPACA_STOCK_BARS.match(path):
            if ("alpaca", match["symbol"]) in self._series:
                return self._alpaca_series_route(match["symbol"], query, headers)
            return self._alpaca_route(self._alpaca_pages.get(match["symbol"]), query, headers, match["symbol"])
        if path == "/v1beta3/crypto/us/bars":
            symbol = query.get("symbols", "")
            return self._alpaca_route(self._alpaca_crypto.get(symbol), query, headers, symbol, crypto=True)
        return _Response(404, {"message": "Not Found"} if _provider_of(path) == "alpaca" else {"error": "Not Found"})

    # Alpaca: both key headers must match, else 403 (Alpaca answers 403 for missing or wrong credentials).
    def _alpaca_route(
        self, pages: list[Any] | None, query: dict[str, str], headers: Any, symbol: str, *, crypto: bool = False
    ) -> _Response:
        if headers.get("APCA-API-KEY-ID") != ALPACA_KEY_ID or headers.get("APCA-API-SECRET-KEY") != ALPACA_SECRET_KEY:
            return _Response(403, {"message": "forbidden."})
        if "timeframe" not in query:
            return _Response(400, {"message": "missing timeframe"})
        if pages is None:
            empty: Any = (
                {"bars": {}, "next_page_token": None}
                if crypto
                else {"bars": None, "symbol": symbol, "next_page_token": None}
            )
            return _Response(200, empty)
        token = query.get("page_token")
        if not token:
            return _Response(200, pages[0])
        for i, page in enumerate(pages[:-1]):
            if page.get("next_page_token") == token:
                return _Response(200, pages[i + 1])
        return _Response(400, {"message": "invalid page_token"})

    # A served series on Alpaca: `start`/`end` are inclusive RFC 3339 bounds; `limit` bars per page, then an opaque
    # `next_page_token` (base64 of the next bar's open time, as Alpaca's tokens encode a position).
    def _alpaca_series_route(self, symbol: str, query: dict[str, str], headers: Any) -> _Response:
        if headers.get("APCA-API-KEY-ID") != ALPACA_KEY_ID or headers.get("APCA-API-SECRET-KEY") != ALPACA_SECRET_KEY:
            return _Response(403, {"message": "forbidden."})
        if "timeframe" not in query:
            return _Response(400, {"message": "missing timeframe"})
        try:
            start = _rfc3339_ms(query["start"]) if "start" in query else 0
            end = _rfc3339_ms(query["end"]) if "end" in query else 2**62
            if query.get("page_token"):
                start = max(start, int(base64.urlsafe_b64decode(query["page_token"]).decode()))
            limit = int(query.get("limit", "1000"))
        except ValueError as exc:
            return _Response(422, {"message": f"invalid query: {exc}"})
        if not 1 <= limit <= 10_000:
            return _Response(422, {"message": "invalid limit: must be between 1 and 10000"})
        with self._lock:
            rows = [b for b in self._series[("alpaca", symbol)] if start <= b.t_ms <= end]
        page, rest = rows[:limit], rows[limit:]
        token = base64.urlsafe_b64encode(str(rest[0].t_ms).encode()).decode() if rest else None
        return _Response(
            200, {"bars": [_alpaca_bar(b) for b in page] or None, "symbol": symbol, "next_page_token": token}
        )

    # A served series on Polygon: `from`/`to` in the path are inclusive epoch milliseconds; one page.
    def _polygon_series_route(self, match: re.Match[str], headers: Any) -> _Response:
        auth = headers.get("Authorization", "")
        if auth != f"Bearer {POLYGON_API_KEY}":
            return _Response(401, _load("polygon", "error_unknown_key.json"))
        frm, to = int(match["frm"]), int(match["to"])
        with self._lock:
            rows = [b for b in self._series[("polygon", match["ticker"])] if frm <= b.t_ms <= to]
        results = [{"t": b.t_ms, "o": b.o, "h": b.h, "l": b.low, "c": b.c, "v": b.v, "vw": b.c, "n": 0} for b in rows]
        body: dict[str, Any] = {
            "ticker": match["ticker"], "queryCount": len(rows), "resultsCount": len(rows), "adjusted": True,
            "status": "OK", "request_id": _request_id(), "count": len(rows),
        }  # fmt: skip
        if results:  # Polygon omits `results` for an empty range
            body["results"] = results
        return _Response(200, body)

    # Binance: public endpoint; a present-but-wrong X-MBX-APIKEY is refused with 401 -2015.
    def _binance_klines_route(self, query: dict[str, str], headers: Any) -> _Response:
        key = headers.get("X-MBX-APIKEY")
        if key is not None and key != BINANCE_API_KEY:
            return _Response(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        symbol, interval = query.get("symbol", ""), query.get("interval", "")
        if interval not in BINANCE_INTERVALS:
            return _Response(400, {"code": -1120, "msg": "Invalid interval."})
        limit = int(query.get("limit", "500"))
        if not 1 <= limit <= 1000:
            return _Response(400, {"code": -1130, "msg": "Invalid data sent for a parameter."})
        if symbol not in {s for s, _ in self._binance_klines}:
            return _Response(400, {"code": -1121, "msg": "Invalid symbol."})
        rows = self._binance_klines.get((symbol, interval), [])
        start = int(query.get("startTime", "0"))
        end = int(query.get("endTime", str(2**63)))
        return _Response(200, [r for r in rows if start <= r[0] <= end][:limit])

    # Polygon: key as `apiKey` query parameter or `Authorization: Bearer`; missing/wrong -> 401 with status ERROR.
    def _polygon_route(self, ticker: str, query: dict[str, str], headers: Any) -> _Response:
        auth = headers.get("Authorization", "")
        key = query.get("apiKey") or (auth[len("Bearer ") :] if auth.startswith("Bearer ") else None)
        if not key:
            return _Response(401, {"status": "ERROR", "request_id": _request_id(), "error": "API Key was not provided"})
        if key != POLYGON_API_KEY:
            return _Response(401, _load("polygon", "error_unknown_key.json"))
        pages = self._polygon_pages.get(ticker)
        if pages is None:
            return _Response(
                200,
                {
                    "ticker": ticker,
                    "queryCount": 0,
                    "resultsCount": 0,
                    "adjusted": True,
                    "status": "OK",
                    "request_id": _request_id(),
                    "count": 0,
                },
            )
        cursor = query.get("cursor")
        index = 0
        if cursor:
            cursors = [parse_qs(urlsplit(p.get("next_url", "")).query).get("cursor", [None])[0] for p in pages]
            if cursor not in cursors[:-1]:
                return _Response(400, {"status": "ERROR", "request_id": _request_id(), "error": "invalid cursor"})
            index = cursors.index(cursor) + 1
        page = dict(pages[index])
        if "next_url" in page:  # the recorded next_url points at api.polygon.io; point it here instead
            page["next_url"] = page["next_url"].replace(POLYGON_ORIGIN, self.url)
        return _Response(200, page)
