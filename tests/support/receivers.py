"""Real alert receivers on loopback: an HTTP sink (webhooks, Slack) and an SMTP server (aiosmtpd), for tests.

    with HttpSink() as sink, SmtpReceiver() as smtp:
        sink.fail_next(2, status=500)            # then 200
        ... deliver to sink.url / smtp.host, smtp.port ...
        assert sink.wait_for(3)
        assert smtp.wait_for(1)

Both record everything they receive. The sink can be scripted to answer error statuses a number of times, or to
hang (hold each request until `release()`), so retry and isolation behaviour is tested against real sockets.
"""

from __future__ import annotations

import email
import json
import socket
import threading
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Longest a hung request is held, so a forgotten `release()` cannot hang the test session.
MAX_HOLD_SECS = 30.0


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the sink saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class HttpSink:
    """A threaded HTTP server on 127.0.0.1 that records POSTs and answers scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._statuses: list[int] = []
        self._hold = threading.Event()
        self._holding = False
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with sink._cond:
                    sink.requests.append(ReceivedRequest("POST", self.path, dict(self.headers), body))
                    status = sink._statuses.pop(0) if sink._statuses else 200
                    holding = sink._holding
                    sink._cond.notify_all()
                if holding:
                    sink._hold.wait(MAX_HOLD_SECS)
                payload = b"ok" if status < 400 else b"error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="http-sink", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL; any path is accepted."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with `status` (then 200 again)."""
        with self._cond:
            self._statuses.extend([status] * n)

    def hang(self) -> None:
        """Hold every request (up to MAX_HOLD_SECS) until `release()`."""
        self._hold.clear()
        self._holding = True

    def release(self) -> None:
        """Answer held requests and stop holding new ones."""
        self._holding = False
        self._hold.set()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` requests arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout=timeout)

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the SMTP server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    message: Message


class SmtpReceiver:
    """An aiosmtpd SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[ReceivedMail] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mail = ReceivedMail(
                    envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)
                )
                with receiver._cond:
                    receiver.messages.append(mail)
                    receiver._cond.notify_all()
                return "250 Message accepted for delivery"

        self.host = "127.0.0.1"
        self.port = _free_port()
        self._controller = Controller(Handler(), hostname=self.host, port=self.port)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` messages arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count, timeout=timeout)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
