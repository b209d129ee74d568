"""The dashboard web app (FastAPI): the page, a JSON snapshot, a Server-Sent-Events stream and alert actions.

    GET  /                          the page (static HTML + JS + CSS from this package; nothing from the internet)
    GET  /api/snapshot              the current snapshot (the page polls this when SSE is unavailable)
    GET  /api/stream                SSE: an `event: snapshot` whenever the snapshot changes (checked every second)
    POST /api/alerts/{id}/ack       acknowledge an active alert  (JSON body {"by": "..."} optional)
    POST /api/alerts/{id}/resolve   resolve an active alert by hand
    GET  /reports/drift/<dataset>/latest.html   a dataset's latest drift report (as the drift module writes them)
    GET  /healthz                   liveness ({"status": "ok"})
    GET  /static/...                the page's script and stylesheet

Security: with a token every route but /healthz and /static/ (code, no data) needs `Authorization: Bearer <token>`
or `?token=<token>` (the page and EventSource cannot set headers), compared in constant time. Binding beyond
loopback without a token is refused (`check_bind`). Without a token the app answers only requests whose Host is a
loopback name, so a web page in the operator's browser cannot reach it through DNS rebinding, and POSTs from another
origin are refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gpt_trader.core.errors import ConfigError
from gpt_trader.monitoring.dashboard.source import LATEST_HTML, DashboardSource

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The page loads only its own files and talks only to its own origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# SSE sends a comment this often when nothing changed, so proxies and the browser keep the stream open.
KEEPALIVE_SECS = 15.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AlertAction(BaseModel):
    """Who acts on an alert (recorded in the alert and its history)."""

    by: str = Field(default="dashboard", min_length=1, max_length=64)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost", IPv6 with or without brackets) only accepts local connections."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind beyond loopback without a token, and tokens too short to resist guessing (`ConfigError`)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"dashboard token is {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host!r} without a token: anyone who can reach that address could "
            "read positions and P&L and acknowledge alerts. Bind 127.0.0.1 (or ::1), or pass --token / set "
            "GPT_TRADER_DASHBOARD_TOKEN."
        )


def create_app(source: DashboardSource, *, token: str | None, interval_secs: float = 1.0) -> FastAPI:
    """The dashboard app over `source`; `token` None means loopback-only use (see the module docstring)."""
    if token is not None:
        check_bind("0.0.0.0", token)  # the same length rule wherever it is bound

    app = FastAPI(title="GPT-Trader dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    stopping = threading.Event()
    app.state.stopping = stopping

    def json_response(body: Any, status_code: int = 200) -> Response:
        return Response(
            orjson.dumps(body),
            status_code=status_code,
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/api/snapshot")
    async def snapshot() -> Response:
        return json_response(await run_in_threadpool(source.snapshot))

    @app.get("/api/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            last: bytes | None = None
            last_sent = time.monotonic()
            while not stopping.is_set():
                snap = await run_in_threadpool(source.snapshot)
                # Compare without the timestamp, so an unchanged state sends nothing.
                body = orjson.dumps({k: v for k, v in snap.items() if k != "generated_at"})
                now = time.monotonic()
                if body != last:
                    last, last_sent = body, now
                    yield b"event: snapshot\ndata: " + orjson.dumps(snap) + b"\n\n"
                elif now - last_sent >= KEEPALIVE_SECS:
                    last_sent = now
                    yield b": keep-alive\n\n"
                await asyncio.sleep(interval_secs)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def act(action: Callable[[str, str], dict[str, Any]], alert_id: str, body: AlertAction | None) -> Response:
        by = body.by if body is not None else "dashboard"
        try:
            alert = await run_in_threadpool(action, alert_id, by)
        except KeyError:
            raise HTTPException(404, f"no active alert with id {alert_id!r}") from None
        return json_response(alert)

    @app.post("/api/alerts/{alert_id}/ack")
    async def acknowledge(alert_id: str, body: AlertAction | None = None) -> Response:
        return await act(source.acknowledge, alert_id, body)

    @app.post("/api/alerts/{alert_id}/resolve")
    async def resolve(alert_id: str, body: AlertAction | None = None) -> Response:
        return await act(source.resolve, alert_id, body)

    @app.get("/reports/drift/{key:path}", include_in_schema=False)
    async def drift_report(key: str) -> Response:
        # `<dataset key>/latest.html`, or a bare `latest.html`; the source refuses anything outside its drift folder.
        path = None
        if key == LATEST_HTML or key.endswith("/" + LATEST_HTML):
            path = await run_in_threadpool(source.drift_report, key[: -len(LATEST_HTML)].rstrip("/"))
        if path is None:
            raise HTTPException(404, f"no drift report at {key!r}")
        return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(_Guard, token=token)
    return app


class _Guard:
    """ASGI middleware: token check, loopback Host check (no token), same-origin POSTs and security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._check(scope, headers)
        if problem is not None:
            status, detail = problem
            await _send_error(send, status, detail, bearer=status == 401)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if not scope["path"].startswith("/reports/"):  # the drift report is generated HTML with its own needs
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        path = scope["path"]
        host = headers.get("host", "")
        if self.token is None and not is_loopback(_hostname(host)):
            return 403, "the dashboard answers loopback host names only when it has no token"
        if scope["method"] == "POST":
            origin = headers.get("origin")
            if origin is not None and origin != "null" and urlsplit(origin).netloc != host:
                return 403, "cross-origin request refused"
        # The page's own script and stylesheet are public code (no data); the page itself and the API need the token.
        if self.token is None or path == "/healthz" or path.startswith("/static/"):
            return None
        supplied = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            supplied = auth[7:].strip()
        else:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            supplied = values[0] if values else None
        if supplied is None or not hmac.compare_digest(supplied.encode(), self.token):
            return 401, "a valid token is required: Authorization: Bearer <token> or ?token=<token>"
        return None


def _hostname(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8050" -> "::1", "localhost:8050" -> "localhost")."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


async def _send_error(send: Send, status: int, detail: str, *, bearer: bool) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- hosting -------------------------------------------------------------------------------------------------------


def format_url(host: str, port: int, token: str | None = None) -> str:
    """The page's URL (with the token as a query parameter when there is one, for the operator to open)."""
    name = host.strip("[]")
    shown = f"[{name}]" if ":" in name else name
    if shown in ("0.0.0.0", "[::]"):  # bound to every interface: loopback still reaches it
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _uvicorn_server(app: FastAPI, host: str, port: int, log_level: str) -> Any:
    import uvicorn  # only the hosting helpers need it; tests drive the app in-process

    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # SSE streams end within a second of stop(); this bounds the wait if a client misbehaves.
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


class DashboardServer:
    """The dashboard served by uvicorn on a background thread, for a process that has other work (the live loop).

    `port=0` picks a free port; read the bound one from `port` / `url` after `start()`.
    """

    def __init__(
        self,
        source: DashboardSource,
        host: str = "127.0.0.1",
        port: int = 8050,
        token: str | None = None,
        *,
        interval_secs: float = 1.0,
        log_level: str = "warning",
    ) -> None:
        check_bind(host, token)
        self.host = host
        self.token = token
        self.app = create_app(source, token=token, interval_secs=interval_secs)
        self._server = _uvicorn_server(self.app, host, port, log_level)
        self._requested_port = port
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> DashboardServer:
        """Start serving; returns once the socket is bound (`RuntimeError` if it cannot be)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._server.run, name="dashboard-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError(f"dashboard could not start on {self.host}:{self._requested_port} (see the log)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the OS's choice for port 0)."""
        servers = getattr(self._server, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._requested_port

    @property
    def url(self) -> str:
        """The page's URL, token included when one is set."""
        return format_url(self.host, self.port, self.token)

    def stop(self, timeout: float = 10.0) -> None:
        """End the SSE streams, stop uvicorn and join its thread. Idempotent."""
        self.app.state.stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("dashboard server thread did not stop within %.0fs", timeout)
            self._thread = None

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_dashboard(
    source: DashboardSource,
    host: str = "127.0.0.1",
    port: int = 8050,
    token: str | None = None,
    *,
    interval_secs: float = 1.0,
    log_level: str = "warning",
) -> None:
    """Serve the dashboard in the foreground until interrupted (refuses a non-loopback bind without a token)."""
    check_bind(host, token)
    app = create_app(source, token=token, interval_secs=interval_secs)
    _uvicorn_server(app, host, port, log_level).run()
