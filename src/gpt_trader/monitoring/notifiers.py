"""Alert delivery: webhook (JSON), Slack-compatible webhook and email (SMTP), off the trading path.

Each notifier gets its own bounded queue and worker thread, so a slow or hung receiver delays only its own
deliveries: `submit` never blocks (a full queue drops the event and counts it), and a failed send is retried with
exponential backoff (tenacity, bounded attempts) on the worker before being counted as failed.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
from tenacity import Retrying, stop_after_attempt, wait_exponential

from gpt_trader.monitoring.alerts import AlertEvent, AlertSeverity

log = logging.getLogger(__name__)

# outcome is one of "sent", "failed", "dropped".
OutcomeListener = Callable[[str, str], None]


class Notifier(Protocol):
    """Delivers one alert event; raises on failure so the dispatcher can retry."""

    name: str

    def send(self, event: AlertEvent) -> None:
        """Deliver `event` or raise."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def alert_payload(event: AlertEvent) -> dict[str, Any]:
    """The JSON body of a generic webhook: `{"source", "status", "alert": {...}}`."""
    return {"source": "gpt-trader", "status": event.kind, "at": event.at.isoformat(), "alert": event.alert.to_dict()}


def alert_title(event: AlertEvent) -> str:
    """One line: `[CRITICAL] high_loss firing: trading.daily_pnl lt -5000 (value -6000)`."""
    a = event.alert
    labels = f" {a.labels}" if a.labels else ""
    return (
        f"[{a.severity.value.upper()}] {a.rule} {event.kind}: {a.metric_name} {a.condition} {a.threshold:g} "
        f"(value {a.last_value:g}){labels}"
    )


class WebhookNotifier:
    """POSTs `alert_payload` as JSON; any non-2xx status is a failure."""

    def __init__(
        self, url: str, *, name: str = "webhook", timeout_secs: float = 5.0, headers: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.url = url
        self._client = httpx.Client(timeout=timeout_secs, headers=headers)

    def body(self, event: AlertEvent) -> dict[str, Any]:
        """The JSON document sent for `event`."""
        return alert_payload(event)

    def send(self, event: AlertEvent) -> None:
        """POST the event; raise `httpx.HTTPStatusError` on a non-2xx answer."""
        self._client.post(self.url, json=self.body(event)).raise_for_status()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


_SLACK_EMOJI = {
    AlertSeverity.INFO: ":information_source:",
    AlertSeverity.WARNING: ":warning:",
    AlertSeverity.ERROR: ":x:",
    AlertSeverity.CRITICAL: ":rotating_light:",
}


class SlackNotifier(WebhookNotifier):
    """Slack incoming-webhook format: a `text` fallback plus Block Kit `blocks` (Mattermost/Discord-compatible text)."""

    def __init__(self, url: str, *, name: str = "slack", timeout_secs: float = 5.0) -> None:
        super().__init__(url, name=name, timeout_secs=timeout_secs)

    def body(self, event: AlertEvent) -> dict[str, Any]:
        """`{"text": ..., "blocks": [...]}` for `event`."""
        a = event.alert
        emoji = ":white_check_mark:" if event.kind == "resolved" else _SLACK_EMOJI[a.severity]
        text = f"{emoji} {alert_title(event)}"
        fields = [
            {"type": "mrkdwn", "text": f"*Metric*\n`{a.metric_name}`"},
            {"type": "mrkdwn", "text": f"*Value*\n{a.last_value:g} ({a.condition} {a.threshold:g})"},
            {"type": "mrkdwn", "text": f"*Severity*\n{a.severity.value}"},
            {"type": "mrkdwn", "text": f"*Fired*\n{a.fired_at.isoformat()}"},
        ]
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                {"type": "section", "fields": fields},
            ],
        }


class EmailNotifier:
    """Sends a plain-text email through an SMTP relay (smtplib; STARTTLS and login optional)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        *,
        name: str = "email",
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_secs: float = 5.0,
    ) -> None:
        if not recipients:
            raise ValueError("EmailNotifier needs at least one recipient")
        self.name = name
        self.host, self.port = host, port
        self.sender, self.recipients = sender, list(recipients)
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout_secs = timeout_secs

    def message(self, event: AlertEvent) -> EmailMessage:
        """The email for `event`."""
        a = event.alert
        msg = EmailMessage()
        msg["Subject"] = f"[gpt-trader] {alert_title(event)}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        lines = [alert_title(event), ""]
        lines += [f"{k}: {v}" for k, v in a.to_dict().items() if v is not None]
        msg.set_content("\n".join(lines))
        return msg

    def send(self, event: AlertEvent) -> None:
        """One SMTP session per event: alerts are rare, and a kept-open session would go stale."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_secs) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(self.message(event))

    def close(self) -> None:
        """Nothing held between sends."""


_STOP = object()


@dataclass
class _Route:
    notifier: Notifier
    min_rank: int
    send_resolved: bool
    queue: queue.Queue[object]
    thread: threading.Thread | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "dropped": 0})


class NotificationDispatcher:
    """Routes alert events by severity to notifiers, each behind a bounded queue and a worker thread."""

    def __init__(
        self,
        *,
        queue_size: int = 1_000,
        max_attempts: int = 3,
        retry_wait_secs: float = 0.5,
        retry_max_wait_secs: float = 10.0,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.retry_wait_secs = retry_wait_secs
        self.retry_max_wait_secs = retry_max_wait_secs
        self._on_outcome = on_outcome
        self._routes: list[_Route] = []
        self._closed = False
        # Pending = queued or being delivered; lets tests and shutdown wait for delivery without sleeping blindly.
        self._pending = 0
        self._idle = threading.Condition()

    def add(
        self, notifier: Notifier, *, min_severity: AlertSeverity = AlertSeverity.INFO, send_resolved: bool = True
    ) -> None:
        """Start delivering events of alerts at or above `min_severity` to `notifier`."""
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        route = _Route(notifier, min_severity.rank, send_resolved, queue.Queue(maxsize=self.queue_size))
        route.thread = threading.Thread(target=self._work, args=(route,), name=f"notify-{notifier.name}", daemon=True)
        self._routes.append(route)
        route.thread.start()

    def submit(self, event: AlertEvent) -> None:
        """Queue `event` for every matching route; never blocks (a full queue drops and counts)."""
        if self._closed:
            return
        for route in self._routes:
            if event.alert.severity.rank < route.min_rank:
                continue
            if event.kind == "resolved" and not route.send_resolved:
                continue
            if event.kind == "acknowledged":  # operators acknowledged it themselves; nobody needs telling
                continue
            with self._idle:
                self._pending += 1
            try:
                route.queue.put_nowait(event)
            except queue.Full:
                self._done(route, "dropped")
                log.warning("notification queue for %s full; dropped %s", route.notifier.name, event.alert.rule)

    def _work(self, route: _Route) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.retry_wait_secs, max=self.retry_max_wait_secs),
            reraise=True,
        )
        while True:
            item = route.queue.get()
            if item is _STOP:
                return
            assert isinstance(item, AlertEvent)
            try:
                retrying(route.notifier.send, item)
            except Exception as exc:
                log.error("notifier %s failed after %d attempts: %s", route.notifier.name, self.max_attempts, exc)
                self._done(route, "failed")
            else:
                self._done(route, "sent")

    def _done(self, route: _Route, outcome: str) -> None:
        route.counts[outcome] += 1
        if self._on_outcome is not None:
            self._on_outcome(route.notifier.name, outcome)
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued event is delivered or failed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per notifier name: sent, failed and dropped counts."""
        return {r.notifier.name: dict(r.counts) for r in self._routes}

    def close(self, timeout: float = 2.0) -> None:
        """Let queued deliveries finish (up to `timeout` each worker), then stop workers and close notifiers.

        A worker stuck in a hung send is abandoned (it is a daemon thread) rather than blocking shutdown.
        """
        if self._closed:
            return
        self._closed = True
        for route in self._routes:
            try:
                route.queue.put(_STOP, timeout=timeout)
            except queue.Full:
                continue
        for route in self._routes:
            if route.thread is not None:
                route.thread.join(timeout)
            if route.thread is None or not route.thread.is_alive():
                route.notifier.close()
