"""Config section for monitoring and alerting.

Every nested section has defaults so `MonitoringConfig()` (and a bare `SystemMonitor()`) works without a file:
no port is bound and metric history lives in memory unless configured. Endpoints and secrets (history URL,
webhook URLs, SMTP password) may come from GPT_TRADER_MONITORING__... environment variables via `Settings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr, model_validator

from gpt_trader.config_base import Section, fold_seed_alias
from gpt_trader.monitoring.alerts import AlertRule, AlertSeverity
from gpt_trader.monitoring.drift import DriftConfig


class SamplerConfig(Section):
    """The background thread that samples system resources and time-based metrics."""

    interval_secs: float = Field(default=5.0, gt=0)
    # The filesystem whose usage `system.disk_percent` reports.
    disk_path: str = "/"


class ExporterConfig(Section):
    """The Prometheus `/metrics` HTTP endpoint; off by default so library use and tests bind no port."""

    enabled: bool = False
    addr: str = "127.0.0.1"
    # 0 asks the OS for a free port (the bound port is returned by `SystemMonitor.serve_metrics`).
    port: int = Field(default=9108, ge=0, le=65535)


class HistoryConfig(Section):
    """Where metric samples and alert events are kept, and how they are written."""

    # SQLAlchemy URL; None keeps history in an in-memory SQLite database (lost on exit).
    # e.g. "sqlite:///data/monitoring/history.db" or "postgresql://user@host/db" (psycopg 3 is used).
    url: str | None = None
    batch_size: int = Field(default=1_000, gt=0)
    flush_interval_secs: float = Field(default=1.0, gt=0)
    # Samples waiting for the writer beyond this are dropped (and counted) rather than growing memory.
    max_buffer: int = Field(default=200_000, gt=0)
    purge_interval_secs: float = Field(default=600.0, gt=0)


class WebhookTarget(Section):
    """A JSON webhook (generic or Slack-compatible) that receives alerts at or above `min_severity`."""

    url: str
    min_severity: AlertSeverity = AlertSeverity.WARNING
    send_resolved: bool = True


class EmailTarget(Section):
    """An SMTP relay and the recipients of alerts at or above `min_severity`."""

    host: str
    port: int = Field(default=25, gt=0, le=65535)
    sender: str
    recipients: list[str] = Field(min_length=1)
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    min_severity: AlertSeverity = AlertSeverity.CRITICAL
    send_resolved: bool = True


class NotificationsConfig(Section):
    """Alert routing targets and the delivery queue that keeps them off the trading path."""

    webhooks: list[WebhookTarget] = Field(default_factory=list)
    slack: list[WebhookTarget] = Field(default_factory=list)
    email: list[EmailTarget] = Field(default_factory=list)
    # Per notifier; events beyond it are dropped and counted (gpt_trader_notifications_total{outcome="dropped"}).
    queue_size: int = Field(default=1_000, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_wait_secs: float = Field(default=0.5, ge=0)
    retry_max_wait_secs: float = Field(default=10.0, ge=0)
    timeout_secs: float = Field(default=5.0, gt=0)


class HealthWeights(Section):
    """Relative weight of each component in the overall health score (renormalised over known components)."""

    freshness: float = Field(default=0.25, ge=0)
    errors: float = Field(default=0.20, ge=0)
    latency: float = Field(default=0.20, ge=0)
    resources: float = Field(default=0.15, ge=0)
    alerts: float = Field(default=0.20, ge=0)


class HealthConfig(Section):
    """Budgets the health score measures against (see `gpt_trader.monitoring.health`)."""

    max_data_age_secs: float = Field(default=60.0, gt=0)
    error_ratio_good: float = Field(default=0.01, ge=0, le=1)
    error_ratio_bad: float = Field(default=0.10, gt=0, le=1)
    latency_budget_ms: float = Field(default=10.0, gt=0)
    resource_percent_good: float = Field(default=80.0, ge=0, le=100)
    resource_percent_bad: float = Field(default=95.0, gt=0, le=100)
    # Pipeline error ratio is measured over this trailing window.
    window_secs: float = Field(default=300.0, gt=0)
    weights: HealthWeights = HealthWeights()


class MonitoringConfig(Section):
    """Metric retention, alert pacing, exporter, history store, notifications and health budgets."""

    retention_hours: int = Field(default=168, gt=0)
    # The seed's config calls it `alert_cooldown`; accepted as an alias so a seed-style file loads unchanged.
    alert_cooldown_secs: int = Field(
        default=300, ge=0, validation_alias=AliasChoices("alert_cooldown_secs", "alert_cooldown")
    )
    # Rolling number of realised outcomes behind `model.accuracy`.
    accuracy_window: int = Field(default=500, gt=0)
    alert_history_size: int = Field(default=10_000, gt=0)
    rules: list[AlertRule] = Field(default_factory=list)
    sampler: SamplerConfig = SamplerConfig()
    exporter: ExporterConfig = ExporterConfig()
    history: HistoryConfig = HistoryConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    health: HealthConfig = HealthConfig()
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_key(cls, data: Any) -> Any:
        return fold_seed_alias(cls, data, "alert_cooldown_secs", "alert_cooldown")
