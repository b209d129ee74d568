"""`SystemMonitor`: records system, trading, model and pipeline metrics; exports, stores and alerts on them.

    monitor = SystemMonitor()                     # no port bound, history in memory, no notifiers
    monitor.alert_manager.add_rule(AlertRule(name="high_loss", metric_name="trading.daily_pnl",
                                             condition="lt", threshold=-5000, severity=AlertSeverity.CRITICAL))
    monitor.start()                               # background sampler + history writer (+ /metrics if enabled)
    monitor.record_trading_metrics(portfolio_value=150000, daily_pnl=2500, position_count=10, trade_count=50)
    monitor.stop()

Every `record_*` call updates Prometheus metrics, buffers the samples for history and feeds the alert rules, all
in memory on the caller's thread; database writes and notifications happen on background threads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, start_http_server

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.monitoring.alerts import AlertEvent, AlertManager, LabelKey, label_key
from gpt_trader.monitoring.config import MonitoringConfig
from gpt_trader.monitoring.health import HealthInputs, HealthReport, compute_health
from gpt_trader.monitoring.history import MetricHistory
from gpt_trader.monitoring.metrics import CATALOGUE, MonitoringMetrics
from gpt_trader.monitoring.notifiers import EmailNotifier, NotificationDispatcher, SlackNotifier, WebhookNotifier

log = logging.getLogger(__name__)

# Latencies kept per model for the health score's p95.
LATENCY_SAMPLE = 1_000


class SystemMonitor:
    """Production monitor: metrics for Prometheus, history in SQL, threshold alerts routed to notifiers."""

    def __init__(
        self,
        config: MonitoringConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        history: MetricHistory | None = None,
        store_history: bool = True,
    ) -> None:
        self.config = cfg = config or MonitoringConfig()
        self.clock: Clock = clock or SystemClock()
        self.metrics = MonitoringMetrics(registry)
        self.registry = self.metrics.registry
        n = cfg.notifications
        self.dispatcher = NotificationDispatcher(
            queue_size=n.queue_size,
            max_attempts=n.max_attempts,
            retry_wait_secs=n.retry_wait_secs,
            retry_max_wait_secs=n.retry_max_wait_secs,
            on_outcome=lambda name, outcome: self.metrics.notifications.labels(name, outcome).inc(),
        )
        self.alert_manager = AlertManager(
            cooldown_secs=cfg.alert_cooldown_secs,
            clock=self.clock,
            history_size=cfg.alert_history_size,
            dispatcher=self.dispatcher,
        )
        self.alert_manager.subscribe(self._on_alert_event)
        for rule in cfg.rules:
            self.alert_manager.add_rule(rule)
        self._add_configured_notifiers()

        self.history: MetricHistory | None = None
        if store_history:
            h = cfg.history
            self.history = history or MetricHistory(
                h.url,
                retention_hours=cfg.retention_hours,
                clock=self.clock,
                batch_size=h.batch_size,
                flush_interval_secs=h.flush_interval_secs,
                max_buffer=h.max_buffer,
                purge_interval_secs=h.purge_interval_secs,
                on_drop=self.metrics.history_dropped.inc,
                on_purge=self.metrics.history_purged.inc,
            )

        self._latest: dict[tuple[str, LabelKey], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._pipeline_last: dict[str, float] = {}
        self._pipeline_window: deque[tuple[float, int, int]] = deque()
        self._last_tick_ts: float | None = None
        self._latencies: dict[str, deque[float]] = {}
        self._predictions: dict[str, int] = {}
        self._outcomes: dict[str, deque[bool]] = {}
        self._correct: dict[str, int] = {}
        self._resources: dict[str, float] = {}
        self._net_last: tuple[float, int, int] | None = None

        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._server: Any = None
        self._started = False
        self._stopped = False

    def _add_configured_notifiers(self) -> None:
        n = self.config.notifications
        for i, target in enumerate(n.webhooks):
            notifier = WebhookNotifier(target.url, name=f"webhook-{i}", timeout_secs=n.timeout_secs)
            self.dispatcher.add(notifier, min_severity=target.min_severity, send_resolved=target.send_resolved)
        for i, target in enumerate(n.slack):
            slack = SlackNotifier(target.url, name=f"slack-{i}", timeout_secs=n.timeout_secs)
            self.dispatcher.add(slack, min_severity=target.min_severity, send_resolved=target.send_resolved)
        for i, e in enumerate(n.email):
            email = EmailNotifier(
                e.host,
                e.port,
                e.sender,
                e.recipients,
                name=f"email-{i}",
                starttls=e.starttls,
                username=e.username,
                password=e.password.get_secret_value() if e.password else None,
                timeout_secs=n.timeout_secs,
            )
            self.dispatcher.add(email, min_severity=e.min_severity, send_resolved=e.send_resolved)

    # -- recording (hot path) ------------------------------------------------------------------------------------

    def _observe(self, name: str, value: float, labels: Mapping[str, str] | None, now: datetime, ts: float) -> None:
        if self.history is not None:
            self.history.append(name, value, ts, labels)
        self._latest[(name, label_key(labels))] = (ts, value)
        self.alert_manager.observe(name, value, labels, now)

    def record_trading_metrics(
        self,
        portfolio_value: float | None = None,
        daily_pnl: float | None = None,
        position_count: int | None = None,
        trade_count: int | None = None,
    ) -> None:
        """Record the portfolio snapshot (values left None are not updated); trade_count is trades so far today."""
        now = self.clock.now()
        ts = now.timestamp()
        m = self.metrics
        if portfolio_value is not None:
            m.portfolio_value.set(portfolio_value)
            self._observe("trading.portfolio_value", float(portfolio_value), None, now, ts)
        if daily_pnl is not None:
            m.daily_pnl.set(daily_pnl)
            self._observe("trading.daily_pnl", float(daily_pnl), None, now, ts)
        if position_count is not None:
            m.positions.set(position_count)
            self._observe("trading.position_count", float(position_count), None, now, ts)
        if trade_count is not None:
            m.trades_today.set(trade_count)
            self._observe("trading.trade_count", float(trade_count), None, now, ts)

    def record_prediction(self, model: str, latency_ms: float, count: int = 1) -> None:
        """Record `count` predictions by `model` that took `latency_ms` (per prediction)."""
        now = self.clock.now()
        m = self.metrics
        m.model_latency.labels(model).observe(latency_ms / 1000.0)
        m.predictions.labels(model).inc(count)
        latencies = self._latencies.get(model)
        if latencies is None:
            latencies = self._latencies.setdefault(model, deque(maxlen=LATENCY_SAMPLE))
        latencies.append(latency_ms)
        self._predictions[model] = self._predictions.get(model, 0) + count
        self._observe("model.latency_ms", float(latency_ms), {"model": model}, now, now.timestamp())

    def record_outcome(self, model: str, correct: bool) -> None:
        """Record whether a realised outcome matched `model`'s prediction; updates rolling `model.accuracy`."""
        now = self.clock.now()
        with self._lock:
            window = self._outcomes.get(model)
            if window is None:
                window = self._outcomes[model] = deque(maxlen=self.config.accuracy_window)
                self._correct[model] = 0
            if len(window) == window.maxlen and window[0]:
                self._correct[model] -= 1
            window.append(correct)
            self._correct[model] += int(correct)
            accuracy = self._correct[model] / len(window)
        self.metrics.outcomes.labels(model, "correct" if correct else "wrong").inc()
        self.metrics.accuracy.labels(model).set(accuracy)
        self._observe("model.accuracy", accuracy, {"model": model}, now, now.timestamp())

    def record_pipeline_metrics(
        self,
        ticks_ingested: int = 0,
        errors: int = 0,
        lag_secs: float | None = None,
        dead_letters: int = 0,
        *,
        source: str = "default",
        last_tick_at: datetime | None = None,
    ) -> None:
        """Record a pipeline report: counts since the previous report for `source`, and the current lag.

        Derives `pipeline.ingest_rate` (ticks/s since the previous report), `pipeline.error_rate`
        (errors / (ticks + errors) in this report) and the data age used by the health score.
        """
        now = self.clock.now()
        ts = now.timestamp()
        m = self.metrics
        labels = {"source": source}
        if ticks_ingested:
            m.ticks.labels(source).inc(ticks_ingested)
        if errors:
            m.pipeline_errors.labels(source).inc(errors)
        if dead_letters:
            m.dead_letters.labels(source).inc(dead_letters)
        with self._lock:
            previous = self._pipeline_last.get(source)
            self._pipeline_last[source] = ts
            self._pipeline_window.append((ts, ticks_ingested, errors))
            if ticks_ingested:
                tick_ts = last_tick_at.timestamp() if last_tick_at is not None else ts
                self._last_tick_ts = max(self._last_tick_ts or tick_ts, tick_ts)
                m.last_tick.set(self._last_tick_ts)
        if previous is not None and ts > previous:
            rate = ticks_ingested / (ts - previous)
            m.ingest_rate.labels(source).set(rate)
            self._observe("pipeline.ingest_rate", rate, labels, now, ts)
        if ticks_ingested + errors > 0:
            ratio = errors / (ticks_ingested + errors)
            m.error_ratio.labels(source).set(ratio)
            self._observe("pipeline.error_rate", ratio, labels, now, ts)
        if lag_secs is not None:
            m.lag.labels(source).set(lag_secs)
            self._observe("pipeline.lag_secs", float(lag_secs), labels, now, ts)
        self._observe("pipeline.dead_letters", float(dead_letters), labels, now, ts)

    def record(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record any gauge-like metric by dotted name (custom names are exported as `gpt_trader_<name>`)."""
        spec = CATALOGUE.get(name)
        if spec is not None:
            raise ValueError(
                f"{name!r} is recorded by its typed method (record_trading_metrics, record_prediction ...)"
            )
        now = self.clock.now()
        gauge = self.metrics.custom(name, tuple(sorted(labels)) if labels else ())
        (gauge.labels(**labels) if labels else gauge).set(value)
        self._observe(name, float(value), labels, now, now.timestamp())

    # -- sampling (background) -----------------------------------------------------------------------------------

    def sample_system(self) -> dict[str, float]:
        """Sample CPU, memory, disk and network, refresh time-based metrics and health, and evaluate rules."""
        now = self.clock.now()
        ts = now.timestamp()
        m = self.metrics
        vm = psutil.virtual_memory()
        values = {
            "system.cpu_percent": float(psutil.cpu_percent(interval=None)),
            "system.memory_percent": float(vm.percent),
            "system.memory_used_bytes": float(vm.used),
            "system.disk_percent": float(psutil.disk_usage(self.config.sampler.disk_path).percent),
        }
        net = psutil.net_io_counters()
        mono = time.monotonic()  # rates need elapsed real time even when the clock is simulated
        if net is not None:
            if self._net_last is not None and mono > self._net_last[0]:
                dt = mono - self._net_last[0]
                values["system.network_sent_bytes_per_sec"] = max(0.0, (net.bytes_sent - self._net_last[1]) / dt)
                values["system.network_recv_bytes_per_sec"] = max(0.0, (net.bytes_recv - self._net_last[2]) / dt)
            self._net_last = (mono, net.bytes_sent, net.bytes_recv)
        gauges = {
            "system.cpu_percent": m.cpu_percent,
            "system.memory_percent": m.memory_percent,
            "system.memory_used_bytes": m.memory_used,
            "system.disk_percent": m.disk_percent,
            "system.network_sent_bytes_per_sec": m.net_sent,
            "system.network_recv_bytes_per_sec": m.net_recv,
        }
        for name, value in values.items():
            gauges[name].set(value)
            self._observe(name, value, None, now, ts)
        m.process_rss.set(psutil.Process().memory_info().rss)
        self._resources = {k: values[k] for k in ("system.cpu_percent", "system.memory_percent", "system.disk_percent")}
        if self._last_tick_ts is not None:
            age = max(0.0, ts - self._last_tick_ts)
            m.data_age.set(age)
            self._observe("pipeline.data_age_secs", age, None, now, ts)
            values["pipeline.data_age_secs"] = age
        for model, count in list(self._predictions.items()):
            self._observe("model.prediction_count", float(count), {"model": model}, now, ts)
        self.alert_manager.evaluate(now)
        report = self.health()
        values["health.score"] = report.score
        self._observe("health.score", report.score, None, now, ts)
        return values

    def health(self) -> HealthReport:
        """The current health score (see `gpt_trader.monitoring.health` for the formula); updates its gauges."""
        ts = self.clock.now().timestamp()
        with self._lock:
            horizon = ts - self.config.health.window_secs
            window = self._pipeline_window
            while window and window[0][0] < horizon:
                window.popleft()
            ticks = sum(t for _, t, _ in window)
            errors = sum(e for _, _, e in window)
            last_tick = self._last_tick_ts
        p95s = [_p95(list(lat)) for lat in list(self._latencies.values()) if lat]
        inputs = HealthInputs(
            data_age_secs=max(0.0, ts - last_tick) if last_tick is not None else None,
            error_ratio=errors / (ticks + errors) if ticks + errors > 0 else None,
            latency_p95_ms=max(p95s) if p95s else None,
            resource_percent=max(self._resources.values()) if self._resources else None,
            active_alerts=self.alert_manager.active_counts(),
        )
        report = compute_health(inputs, self.config.health)
        self.metrics.health.set(report.score)
        for component, score in report.components.items():
            self.metrics.health_component.labels(component).set(score)
        return report

    def _on_alert_event(self, event: AlertEvent) -> None:
        a = event.alert
        if event.kind == "firing":
            self.metrics.alerts_fired.labels(a.rule, a.severity.value).inc()
        elif event.kind == "resolved":
            self.metrics.alerts_resolved.labels(a.rule, a.severity.value).inc()
        for severity, count in self.alert_manager.active_counts().items():
            self.metrics.alerts_active.labels(severity.value).set(count)
        if self.history is not None:
            self.history.append_alert_event(event)

    # -- reading -------------------------------------------------------------------------------------------------

    def latest(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The last recorded value of a dotted metric (for the dashboard and the auto-scaler), or None."""
        entry = self._latest.get((name, label_key(labels)))
        return entry[1] if entry is not None else None

    def snapshot(self) -> dict[str, float]:
        """Every latest value, keyed `name` or `name{k=v,...}`."""
        out: dict[str, float] = {}
        for (name, key), (_, value) in list(self._latest.items()):
            shown = "{" + ",".join(f"{k}={v}" for k, v in key) + "}" if key else ""
            out[name + shown] = value
        return out

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def serve_metrics(self, port: int | None = None, addr: str | None = None) -> int:
        """Serve `/metrics` for this monitor's registry; return the bound port (port 0 picks a free one)."""
        if self._server is not None:
            return int(self._server.server_port)
        exporter = self.config.exporter
        server, _thread = start_http_server(
            exporter.port if port is None else port,
            addr=exporter.addr if addr is None else addr,
            registry=self.registry,
        )
        self._server = server
        return int(server.server_port)

    def start(self) -> None:
        """Start the system sampler, the history writer and (if `exporter.enabled`) the `/metrics` endpoint."""
        if self._stopped:
            raise RuntimeError("a stopped SystemMonitor cannot be restarted; create a new one")
        if self._started:
            return
        self._started = True
        psutil.cpu_percent(interval=None)  # the first call only primes the counter and reads 0.0
        if self.history is not None:
            self.history.start()
        if self.config.exporter.enabled:
            self.serve_metrics()
        self._sampler = threading.Thread(target=self._sample_loop, name="monitoring-sampler", daemon=True)
        self._sampler.start()

    def _sample_loop(self) -> None:
        while True:
            try:
                self.sample_system()
            except Exception:  # a failed sample (e.g. disk path gone) must not end monitoring
                log.exception("system sample failed")
            if self._stop.wait(self.config.sampler.interval_secs):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop background threads, flush history and close the `/metrics` server; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout)
        self.alert_manager.close(timeout=min(timeout, 2.0))
        if self.history is not None:
            self.history.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SystemMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _p95(values: list[float]) -> float:
    values.sort()
    return values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]
