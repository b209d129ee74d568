"""Notification delivery to real loopback receivers: HTTP sink (webhook, Slack) and aiosmtpd (email)."""

from __future__ import annotations

import asyncio
import email
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertManager, AlertRule, AlertSeverity
from gpt_trader.monitoring.config import EmailTarget, MonitoringConfig, NotificationsConfig, WebhookTarget
from gpt_trader.monitoring.notifiers import EmailNotifier, NotificationDispatcher, SlackNotifier, WebhookNotifier
from gpt_trader.monitoring.system import SystemMonitor
from tests.support.receivers import HttpSink, SmtpReceiver


class ScriptedSmtp:
    """aiosmtpd on loopback whose replies to DATA are scripted: `replies` in order, then `then` for every later one.

    With `hold=True` each DATA waits for `release()` before replying, so a test can act while a delivery is
    provably in flight. Every attempt's message is kept in `attempts`, accepted ones also in `accepted`.
    """

    def __init__(self, replies: list[str], *, then: str = "250 Message accepted", hold: bool = False) -> None:
        from aiosmtpd.controller import Controller

        self.attempts: list[Message] = []
        self.accepted: list[Message] = []
        self.holding = threading.Event()
        self._released = threading.Event()
        if not hold:
            self._released.set()
        script = list(replies)
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.attempts.append(email.message_from_bytes(envelope.content))
                outer.holding.set()
                await asyncio.to_thread(outer._released.wait, 10.0)
                reply = script.pop(0) if script else then
                if reply.startswith("250"):
                    outer.accepted.append(outer.attempts[-1])
                return reply

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.host, self.port = "127.0.0.1", int(sock.getsockname()[1])
        self._controller = Controller(Handler(), hostname=self.host, port=self.port)

    def release(self) -> None:
        """Let held and later DATA commands reply at once."""
        self._released.set()

    def __enter__(self) -> ScriptedSmtp:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._controller.stop()


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as s:
        yield s


@pytest.fixture
def dispatcher() -> Iterator[NotificationDispatcher]:
    d = NotificationDispatcher(max_attempts=3, retry_wait_secs=0.01, retry_max_wait_secs=0.05)
    yield d
    d.close(timeout=1.0)


def _high_loss() -> AlertRule:
    """A CRITICAL alert on a daily loss beyond $5,000."""
    return AlertRule(
        name="high_loss", metric_name="trading.daily_pnl", condition="lt", threshold=-5000,
        severity=AlertSeverity.CRITICAL,
    )  # fmt: skip


def _manager(clock: SimClock, dispatcher: NotificationDispatcher) -> AlertManager:
    manager = AlertManager(cooldown_secs=0, clock=clock, dispatcher=dispatcher)
    manager.add_rule(_high_loss())
    manager.add_rule(
        AlertRule(
            name="slow_model",
            metric_name="model.latency_ms",
            condition="gt",
            threshold=10,
            severity=AlertSeverity.WARNING,
        )
    )
    return manager


def test_webhook_firing_and_resolved_delivered_as_json(
    clock: SimClock, sink: HttpSink, dispatcher: NotificationDispatcher
) -> None:
    manager = _manager(clock, dispatcher)
    manager.add_notifier(WebhookNotifier(sink.url))
    manager.observe("trading.daily_pnl", -6000)
    clock.advance(timedelta(minutes=1))
    manager.observe("trading.daily_pnl", 100)
    assert dispatcher.wait_idle(5)
    assert [r.json()["status"] for r in sink.requests] == ["firing", "resolved"]
    body = sink.requests[0].json()
    assert body["source"] == "gpt-trader"
    assert body["alert"]["rule"] == "high_loss"
    assert body["alert"]["severity"] == "critical"
    assert body["alert"]["value"] == -6000
    assert sink.requests[0].headers["Content-Type"] == "application/json"
    assert dispatcher.stats()["webhook"] == {"sent": 2, "failed": 0, "dropped": 0}


def test_slack_body_has_text_and_blocks(clock: SimClock, sink: HttpSink, dispatcher: NotificationDispatcher) -> None:
    manager = _manager(clock, dispatcher)
    manager.add_notifier(SlackNotifier(sink.url))
    manager.observe("trading.daily_pnl", -6000)
    assert dispatcher.wait_idle(5)
    body = sink.requests[0].json()
    assert body["text"].startswith(":rotating_light: [CRITICAL] high_loss firing: trading.daily_pnl lt -5000")
    assert body["blocks"][0]["type"] == "section"
    assert any("`trading.daily_pnl`" in f["text"] for f in body["blocks"][1]["fields"])


def test_email_delivered_to_real_smtp_server(clock: SimClock, dispatcher: NotificationDispatcher) -> None:
    with SmtpReceiver() as smtp:
        manager = _manager(clock, dispatcher)
        manager.add_notifier(
            EmailNotifier(smtp.host, smtp.port, "bot@gpt-trader.test", ["ops@gpt-trader.test", "risk@gpt-trader.test"])
        )
        manager.observe("trading.daily_pnl", -7500)
        assert smtp.wait_for(1)
        mail = smtp.messages[0]
        assert mail.mail_from == "bot@gpt-trader.test"
        assert mail.rcpt_tos == ["ops@gpt-trader.test", "risk@gpt-trader.test"]
        assert mail.message["Subject"].startswith("[gpt-trader] [CRITICAL] high_loss firing")
        assert "value: -7500" in mail.message.get_payload()


def test_email_transient_smtp_replies_are_retried_and_delivered(clock: SimClock) -> None:
    # Two "try again later" answers, then acceptance: delivered on the third attempt, per the configured retries.
    with ScriptedSmtp(["451 4.3.0 Try again later", "451 4.3.0 Try again later"]) as smtp:
        target = EmailTarget(host=smtp.host, port=smtp.port, sender="bot@gpt-trader.test", recipients=["ops@x.test"])
        config = MonitoringConfig(
            alert_cooldown_secs=0,
            notifications=NotificationsConfig(
                email=[target], max_attempts=3, retry_wait_secs=0.01, retry_max_wait_secs=0.05
            ),
        )
        monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
        monitor.alert_manager.add_rule(_high_loss())
        try:
            monitor.record_trading_metrics(daily_pnl=-6000)
            assert monitor.dispatcher.wait_idle(10)
            assert len(smtp.attempts) == 3
            assert len({m.as_string() for m in smtp.attempts}) == 1  # the same email each attempt
            [mail] = smtp.accepted
            assert mail["Subject"].startswith("[gpt-trader] [CRITICAL] high_loss firing")
            assert monitor.dispatcher.stats()["email-0"] == {"sent": 1, "failed": 0, "dropped": 0}
            outcomes = {
                outcome: monitor.registry.get_sample_value(
                    "gpt_trader_notifications_total", {"notifier": "email-0", "outcome": outcome}
                )
                for outcome in ("sent", "failed")
            }
            assert outcomes == {"sent": 1.0, "failed": None}
        finally:
            monitor.stop()


def test_email_permanently_refused_never_blocks_caller(clock: SimClock, dispatcher: NotificationDispatcher) -> None:
    # Every attempt is held by the server and then refused for good (554): the caller goes on regardless.
    with ScriptedSmtp([], then="554 5.7.1 Delivery not authorized", hold=True) as smtp:
        manager = _manager(clock, dispatcher)
        manager.add_notifier(EmailNotifier(smtp.host, smtp.port, "bot@gpt-trader.test", ["ops@gpt-trader.test"]))
        manager.observe("trading.daily_pnl", -6000)
        assert smtp.holding.wait(5)
        # The first delivery is still in the server's hands; recording and alerting carry on meanwhile.
        manager.observe("trading.daily_pnl", 100)  # resolves
        manager.observe("trading.daily_pnl", -7000)  # fires again (cooldown 0)
        assert [a.last_value for a in manager.active_alerts()] == [-7000]
        assert len(smtp.attempts) == 1
        assert dispatcher.stats()["email"] == {"sent": 0, "failed": 0, "dropped": 0}
        smtp.release()
        assert dispatcher.wait_idle(10)
        # firing, resolved, firing: each tried max_attempts times, each counted failed, none delivered.
        assert len(smtp.attempts) == 3 * 3
        assert smtp.accepted == []
        assert dispatcher.stats()["email"] == {"sent": 0, "failed": 3, "dropped": 0}


def test_webhook_500_twice_then_200_is_retried_and_delivered(
    clock: SimClock, sink: HttpSink, dispatcher: NotificationDispatcher
) -> None:
    sink.fail_next(2, status=500)
    manager = _manager(clock, dispatcher)
    manager.add_notifier(WebhookNotifier(sink.url))
    manager.observe("trading.daily_pnl", -6000)
    assert dispatcher.wait_idle(5)
    assert len(sink.requests) == 3
    assert len({r.body for r in sink.requests}) == 1  # the same event each attempt
    assert dispatcher.stats()["webhook"] == {"sent": 1, "failed": 0, "dropped": 0}


def test_webhook_failing_every_attempt_is_counted_failed(
    clock: SimClock, sink: HttpSink, dispatcher: NotificationDispatcher
) -> None:
    sink.fail_next(10, status=503)
    manager = _manager(clock, dispatcher)
    manager.add_notifier(WebhookNotifier(sink.url))
    manager.observe("trading.daily_pnl", -6000)
    assert dispatcher.wait_idle(5)
    assert len(sink.requests) == 3  # bounded by max_attempts
    assert dispatcher.stats()["webhook"]["failed"] == 1


def test_routing_by_min_severity_filters_lower_alerts(clock: SimClock, dispatcher: NotificationDispatcher) -> None:
    with HttpSink() as pager, HttpSink() as chat:
        manager = _manager(clock, dispatcher)
        manager.add_notifier(
            WebhookNotifier(pager.url, name="pager"), min_severity=AlertSeverity.CRITICAL, send_resolved=False
        )
        manager.add_notifier(SlackNotifier(chat.url, name="chat"), min_severity=AlertSeverity.WARNING)
        manager.observe("model.latency_ms", 50, {"model": "tf"})  # WARNING
        manager.observe("trading.daily_pnl", -6000)  # CRITICAL
        manager.observe("trading.daily_pnl", 0)  # resolves CRITICAL
        assert dispatcher.wait_idle(5)
        assert [r.json()["alert"]["rule"] for r in pager.requests] == ["high_loss"]
        assert len(chat.requests) == 3


def test_hung_notifier_does_not_block_recording(clock: SimClock, sink: HttpSink) -> None:
    sink.hang()
    config = MonitoringConfig(
        alert_cooldown_secs=0,
        notifications=NotificationsConfig(
            webhooks=[WebhookTarget(url=sink.url, min_severity=AlertSeverity.INFO)], queue_size=5, timeout_secs=20
        ),
    )
    monitor = SystemMonitor(config, registry=CollectorRegistry(), clock=clock)
    monitor.alert_manager.add_rule(AlertRule(name="loss", metric_name="trading.daily_pnl", condition="lt", threshold=0))
    try:
        started = time.perf_counter()
        for i in range(200):  # 100 firings + 100 resolutions against a receiver that never answers
            monitor.record_trading_metrics(daily_pnl=-1.0 if i % 2 == 0 else 1.0)
        elapsed = time.perf_counter() - started
        assert sink.wait_for(1)
        # Generous bound: a blocking send would take 20 s (the notifier timeout) per event.
        assert elapsed < 5.0
        stats = monitor.dispatcher.stats()["webhook-0"]
        assert stats["dropped"] >= 200 - 5 - 1  # queue of 5, one in flight
        dropped = monitor.registry.get_sample_value(
            "gpt_trader_notifications_total", {"notifier": "webhook-0", "outcome": "dropped"}
        )
        assert dropped == stats["dropped"]
    finally:
        sink.release()
        monitor.stop()


def test_dispatcher_submit_after_close_is_ignored(clock: SimClock, sink: HttpSink) -> None:
    d = NotificationDispatcher()
    manager = _manager(clock, d)
    manager.add_notifier(WebhookNotifier(sink.url))
    d.close()
    manager.observe("trading.daily_pnl", -6000)
    assert d.stats()["webhook"] == {"sent": 0, "failed": 0, "dropped": 0}
    with pytest.raises(RuntimeError, match="closed"):
        d.add(WebhookNotifier(sink.url))
