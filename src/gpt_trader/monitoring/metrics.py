"""The Prometheus metrics and the mapping from internal dotted names to Prometheus names.

Alert rules and history use dotted names ("trading.daily_pnl"); Prometheus, Grafana and the alerting-rules file use
the exported names ("gpt_trader_daily_pnl_usd"). `CATALOGUE` is the one place the two meet; names outside it
map mechanically (`gpt_trader_` + dots to underscores) and are exported as gauges by `MonitoringMetrics.custom`.
Metrics are registered on the registry passed in, never on prometheus_client's global one.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MetricKind = Literal["gauge", "counter", "histogram"]
PREFIX = "gpt_trader_"

# Model latency buckets in seconds: the seed's budget is 10 ms, so resolve well below and around it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class MetricSpec:
    """A dotted metric name and how it is exported."""

    dotted: str
    prometheus: str
    kind: MetricKind
    labels: tuple[str, ...] = ()


CATALOGUE: dict[str, MetricSpec] = {
    s.dotted: s
    for s in (
        MetricSpec("system.cpu_percent", "gpt_trader_system_cpu_percent", "gauge"),
        MetricSpec("system.memory_percent", "gpt_trader_system_memory_percent", "gauge"),
        MetricSpec("system.memory_used_bytes", "gpt_trader_system_memory_used_bytes", "gauge"),
        MetricSpec("system.disk_percent", "gpt_trader_system_disk_percent", "gauge"),
        MetricSpec("system.network_sent_bytes_per_sec", "gpt_trader_system_network_sent_bytes_per_second", "gauge"),
        MetricSpec("system.network_recv_bytes_per_sec", "gpt_trader_system_network_received_bytes_per_second", "gauge"),
        MetricSpec("trading.portfolio_value", "gpt_trader_portfolio_value_usd", "gauge"),
        MetricSpec("trading.daily_pnl", "gpt_trader_daily_pnl_usd", "gauge"),
        MetricSpec("trading.position_count", "gpt_trader_positions", "gauge"),
        MetricSpec("trading.trade_count", "gpt_trader_trades_today", "gauge"),
        MetricSpec("model.latency_ms", "gpt_trader_model_latency_seconds", "histogram", ("model",)),
        MetricSpec("model.prediction_count", "gpt_trader_model_predictions_total", "counter", ("model",)),
        MetricSpec("model.accuracy", "gpt_trader_model_accuracy_ratio", "gauge", ("model",)),
        MetricSpec("pipeline.ticks_ingested", "gpt_trader_ticks_ingested_total", "counter", ("source",)),
        MetricSpec("pipeline.errors", "gpt_trader_pipeline_errors_total", "counter", ("source",)),
        MetricSpec("pipeline.dead_letters", "gpt_trader_dead_letters_total", "counter", ("source",)),
        MetricSpec("pipeline.ingest_rate", "gpt_trader_pipeline_ingest_rate_per_second", "gauge", ("source",)),
        MetricSpec("pipeline.error_rate", "gpt_trader_pipeline_error_ratio", "gauge", ("source",)),
        MetricSpec("pipeline.lag_secs", "gpt_trader_pipeline_lag_seconds", "gauge", ("source",)),
        MetricSpec("pipeline.data_age_secs", "gpt_trader_pipeline_data_age_seconds", "gauge"),
        MetricSpec("health.score", "gpt_trader_health_score", "gauge"),
    )
}

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(dotted: str) -> str:
    """The exported name of a dotted metric: from `CATALOGUE`, else `gpt_trader_<dots as underscores>`."""
    spec = CATALOGUE.get(dotted)
    if spec is not None:
        return spec.prometheus
    return PREFIX + _INVALID.sub("_", dotted)


class MonitoringMetrics:
    """Every metric the monitor exports, registered on one injected `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        # System resources (sampled by the background thread).
        self.cpu_percent = Gauge("gpt_trader_system_cpu_percent", "Machine CPU use, percent", registry=r)
        self.memory_percent = Gauge("gpt_trader_system_memory_percent", "Machine memory use, percent", registry=r)
        self.memory_used = Gauge("gpt_trader_system_memory_used_bytes", "Machine memory in use, bytes", registry=r)
        self.disk_percent = Gauge(
            "gpt_trader_system_disk_percent", "Disk use of the data filesystem, percent", registry=r
        )
        self.net_sent = Gauge(
            "gpt_trader_system_network_sent_bytes_per_second", "Network send rate over the last interval", registry=r
        )
        self.net_recv = Gauge(
            "gpt_trader_system_network_received_bytes_per_second",
            "Network receive rate over the last interval",
            registry=r,
        )
        self.process_rss = Gauge(
            "gpt_trader_process_resident_memory_bytes", "This process's resident memory", registry=r
        )
        # Trading.
        self.portfolio_value = Gauge(
            "gpt_trader_portfolio_value_usd", "Portfolio value (cash + positions), USD", registry=r
        )
        self.daily_pnl = Gauge(
            "gpt_trader_daily_pnl_usd", "Profit and loss since the trading day began, USD", registry=r
        )
        self.positions = Gauge("gpt_trader_positions", "Open positions", registry=r)
        self.trades_today = Gauge("gpt_trader_trades_today", "Trades executed since the trading day began", registry=r)
        # Models.
        self.model_latency = Histogram(
            "gpt_trader_model_latency_seconds",
            "Inference latency per prediction",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter("gpt_trader_model_predictions", "Predictions made", ["model"], registry=r)
        self.outcomes = Counter(
            "gpt_trader_model_outcomes", "Realised prediction outcomes", ["model", "result"], registry=r
        )
        self.accuracy = Gauge(
            "gpt_trader_model_accuracy_ratio",
            "Directional accuracy over the last realised outcomes",
            ["model"],
            registry=r,
        )
        # Data pipeline.
        self.ticks = Counter("gpt_trader_ticks_ingested", "Ticks ingested", ["source"], registry=r)
        self.pipeline_errors = Counter(
            "gpt_trader_pipeline_errors", "Pipeline processing errors", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "gpt_trader_dead_letters", "Inputs sent to the dead-letter stream", ["source"], registry=r
        )
        self.ingest_rate = Gauge(
            "gpt_trader_pipeline_ingest_rate_per_second",
            "Ticks per second between the last two reports",
            ["source"],
            registry=r,
        )
        self.error_ratio = Gauge(
            "gpt_trader_pipeline_error_ratio", "Errors / (ticks + errors) in the last report", ["source"], registry=r
        )
        self.lag = Gauge(
            "gpt_trader_pipeline_lag_seconds", "Processing lag behind the exchange", ["source"], registry=r
        )
        self.data_age = Gauge(
            "gpt_trader_pipeline_data_age_seconds", "Seconds since the last ingested tick", registry=r
        )
        self.last_tick = Gauge(
            "gpt_trader_pipeline_last_tick_timestamp_seconds", "Unix time of the last ingested tick", registry=r
        )
        # Alerts, notifications, history, health.
        self.alerts_active = Gauge(
            "gpt_trader_alerts_active", "Active (firing or acknowledged) alerts", ["severity"], registry=r
        )
        self.alerts_fired = Counter("gpt_trader_alerts_fired", "Alerts fired", ["rule", "severity"], registry=r)
        self.alerts_resolved = Counter(
            "gpt_trader_alerts_resolved", "Alerts resolved", ["rule", "severity"], registry=r
        )
        self.notifications = Counter(
            "gpt_trader_notifications",
            "Alert notifications by outcome (sent, failed, dropped)",
            ["notifier", "outcome"],
            registry=r,
        )
        self.history_dropped = Counter(
            "gpt_trader_history_dropped_samples", "Samples dropped because the history writer fell behind", registry=r
        )
        self.history_purged = Counter(
            "gpt_trader_history_purged_rows", "History rows purged past retention", registry=r
        )
        self.health = Gauge("gpt_trader_health_score", "Overall health score, 0-100", registry=r)
        self.health_component = Gauge(
            "gpt_trader_health_component_score", "Health score per component, 0-100", ["component"], registry=r
        )
        self._custom: dict[str, tuple[Gauge, tuple[str, ...]]] = {}
        self._custom_lock = threading.Lock()

    def custom(self, dotted: str, labels: tuple[str, ...] = ()) -> Gauge:
        """The gauge exporting an uncatalogued dotted metric, registered on first use with these label names."""
        entry = self._custom.get(dotted)
        if entry is None:
            with self._custom_lock:
                entry = self._custom.get(dotted)
                if entry is None:
                    gauge = Gauge(
                        prometheus_name(dotted), f"Custom metric {dotted}", list(labels), registry=self.registry
                    )
                    entry = self._custom[dotted] = (gauge, labels)
        if entry[1] != labels:
            raise ValueError(f"metric {dotted!r} was first recorded with labels {entry[1]}, now {labels}")
        return entry[0]

    def exported_names(self) -> set[str]:
        """Every sample name this registry can expose (counter `_total`, histogram `_bucket/_sum/_count` ...)."""
        names: set[str] = set()
        for family in self.registry.collect():
            base = family.name
            if family.type == "counter":
                names.update({f"{base}_total", f"{base}_created"})
            elif family.type == "histogram":
                names.update({f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"})
            else:
                names.add(base)
        return names
