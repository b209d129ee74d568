"""Production monitoring: Prometheus metrics, metric history, threshold alerts, notifiers and health.

The seed's names (`SystemMonitor`, `AlertRule`, `AlertSeverity`) and the rest of the public API are loaded on
first use, so `import gpt_trader.monitoring` stays light (no prometheus_client, psutil, SQLAlchemy or httpx
until a name that needs them is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpt_trader.monitoring.alerts import Alert, AlertEvent, AlertManager, AlertRule, AlertSeverity, AlertState
    from gpt_trader.monitoring.config import MonitoringConfig
    from gpt_trader.monitoring.health import HealthInputs, HealthReport, compute_health
    from gpt_trader.monitoring.history import MetricHistory, MetricSample
    from gpt_trader.monitoring.metrics import CATALOGUE, MonitoringMetrics, prometheus_name
    from gpt_trader.monitoring.notifiers import (
        EmailNotifier,
        NotificationDispatcher,
        Notifier,
        SlackNotifier,
        WebhookNotifier,
    )
    from gpt_trader.monitoring.system import SystemMonitor

_EXPORTS = {
    "Alert": "alerts",
    "AlertEvent": "alerts",
    "AlertManager": "alerts",
    "AlertRule": "alerts",
    "AlertSeverity": "alerts",
    "AlertState": "alerts",
    "MonitoringConfig": "config",
    "HealthInputs": "health",
    "HealthReport": "health",
    "compute_health": "health",
    "MetricHistory": "history",
    "MetricSample": "history",
    "CATALOGUE": "metrics",
    "MonitoringMetrics": "metrics",
    "prometheus_name": "metrics",
    "EmailNotifier": "notifiers",
    "NotificationDispatcher": "notifiers",
    "Notifier": "notifiers",
    "SlackNotifier": "notifiers",
    "WebhookNotifier": "notifiers",
    "SystemMonitor": "system",
}

__all__ = [
    "CATALOGUE",
    "Alert",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertSeverity",
    "AlertState",
    "EmailNotifier",
    "HealthInputs",
    "HealthReport",
    "MetricHistory",
    "MetricSample",
    "MonitoringConfig",
    "MonitoringMetrics",
    "NotificationDispatcher",
    "Notifier",
    "SlackNotifier",
    "SystemMonitor",
    "WebhookNotifier",
    "compute_health",
    "prometheus_name",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # cache: later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
