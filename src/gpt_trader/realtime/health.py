"""Source health and the pipeline's Prometheus metrics.

A source's score in [0, 1] multiplies four factors: freshness (1 until `stale_after_secs`, then 0), latency
(exchange-to-receive delay over the estimated clock offset, vs `latency_budget_ms`), gaps (disconnects since the
pipeline started) and disagreement (its last price vs the median of the other sources on the same symbol, vs
`disagreement_bps`). Metrics are registered on the registry passed in, never on prometheus_client's global one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_NS = 1_000_000_000


@dataclass
class SourceHealth:
    """Live health of one feed."""

    name: str
    connected: bool = False
    last_message_ns: int = 0  # wall clock
    messages: int = 0
    ticks: int = 0
    rejects: int = 0
    reconnects: int = 0
    gaps: int = 0
    stale_events: int = 0
    delay_ewma_ns: float = 0.0
    offset_ns: int | None = None
    disagreement_bps: float = 0.0
    last_price: dict[str, float] = field(default_factory=dict)

    def observe_delay(self, delay_ns: int, alpha: float = 0.05) -> None:
        """Fold one exchange-to-receive delay (over the offset) into the moving average."""
        self.delay_ewma_ns += alpha * (delay_ns - self.delay_ewma_ns)

    def observe_delays(self, delays_ns: Iterable[int], alpha: float = 0.05) -> None:
        """`observe_delay` for each in turn (the same arithmetic, in order)."""
        ewma = self.delay_ewma_ns
        for delay in delays_ns:
            ewma += alpha * (delay - ewma)
        self.delay_ewma_ns = ewma

    def staleness_secs(self, wall_ns: int) -> float:
        """Seconds since the last message (inf if none yet)."""
        return math.inf if not self.last_message_ns else (wall_ns - self.last_message_ns) / _NS

    def score(
        self,
        wall_ns: int,
        *,
        stale_after_secs: float,
        latency_budget_ms: float = 50.0,
        disagreement_budget_bps: float = 50.0,
    ) -> float:
        """Health in [0, 1]; 0 when disconnected or stale."""
        if not self.connected or self.staleness_secs(wall_ns) > stale_after_secs:
            return 0.0
        latency = 1.0 / (1.0 + max(0.0, self.delay_ewma_ns) / (latency_budget_ms * 1e6))
        gaps = 1.0 / (1.0 + 0.25 * self.gaps)
        agree = 1.0 / (1.0 + self.disagreement_bps / disagreement_budget_bps)
        return latency * gaps * agree


def update_disagreement(healths: list[SourceHealth], symbol: str) -> None:
    """Each source's |price - median of the others| in bps on `symbol` (EWMA), when at least two report it."""
    prices = {h.name: h.last_price[symbol] for h in healths if symbol in h.last_price}
    if len(prices) < 2:
        return
    for h in healths:
        if h.name not in prices:
            continue
        others = [p for name, p in prices.items() if name != h.name]
        ref = statistics.median(others)
        if ref > 0:
            bps = abs(prices[h.name] - ref) / ref * 1e4
            h.disagreement_bps += 0.1 * (bps - h.disagreement_bps)


class RealtimeMetrics:
    """The pipeline's metrics on a caller-owned registry (a fresh private one if none is given)."""

    def __init__(self, registry: Any | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        lat = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
        self.ticks = Counter("gpt_trader_realtime_ticks", "Trades accepted", ["source", "symbol"], registry=r)
        self.quotes = Counter("gpt_trader_realtime_quotes", "Quotes accepted", ["source"], registry=r)
        self.rejects = Counter("gpt_trader_realtime_rejects", "Inputs refused", ["source", "reason"], registry=r)
        self.bars = Counter("gpt_trader_realtime_bars", "Bars emitted", ["timeframe", "status"], registry=r)
        self.reconnects = Counter("gpt_trader_realtime_reconnects", "Reconnects", ["source"], registry=r)
        self.failovers = Counter("gpt_trader_realtime_failovers", "Active-source switches", ["symbol"], registry=r)
        self.overflow = Counter(
            "gpt_trader_realtime_buffer_overflow", "Events lost to buffer overflow", ["policy"], registry=r
        )
        self.exchange_to_receive = Histogram(
            "gpt_trader_realtime_exchange_to_receive_seconds",
            "Receive time minus exchange time, after removing the estimated clock offset",
            ["source"], buckets=lat, registry=r,
        )  # fmt: skip
        self.receive_to_processed = Histogram(
            "gpt_trader_realtime_receive_to_processed_seconds",
            "Frame receipt to bars updated (source=pipeline: up to 200 of the newest frames per ticker interval)",
            ["source"], buckets=lat, registry=r,
        )  # fmt: skip
        self.clock_offset = Gauge(
            "gpt_trader_realtime_clock_offset_seconds",
            "Estimated receive-minus-exchange clock offset",
            ["source"],
            registry=r,
        )
        self.health = Gauge(
            "gpt_trader_realtime_source_health", "Source health score in [0, 1]", ["source"], registry=r
        )
        self.raw_delay = Gauge(
            "gpt_trader_realtime_raw_delay_seconds",
            "Latest receive minus exchange time, uncorrected",
            ["source"],
            registry=r,
        )
        # The bus writer: alerts key on `bus_up == 0` and a growing `bus_pending`, not on log lines.
        self.bus_up = Gauge(
            "gpt_trader_realtime_bus_up", "1 while bus publishes succeed, 0 while they fail", registry=r
        )
        self.bus_up.set(1)
        self.bus_failures = Counter(
            "gpt_trader_realtime_bus_publish_failures", "Bus flushes that failed (retried with backoff)", registry=r
        )
        self.bus_pending = Gauge(
            "gpt_trader_realtime_bus_pending", "Ticks and entries queued for the bus, not yet published", registry=r
        )
        self.bus_dropped = Counter(
            "gpt_trader_realtime_bus_dropped",
            "Bus entries never published (rejected: refused by the bus; invalid: bad fields; stop: bus down at stop)",
            ["reason"],
            registry=r,
        )
