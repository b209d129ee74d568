"""Shared monitoring fixtures: a simulated clock and a monitor on a private Prometheus registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.config import MonitoringConfig
from gpt_trader.monitoring.system import SystemMonitor

T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    """Time that moves only when a test says so."""
    return SimClock(T0)


@pytest.fixture
def monitor(clock: SimClock) -> Iterator[SystemMonitor]:
    """A monitor with default config on its own registry, stopped afterwards."""
    mon = SystemMonitor(MonitoringConfig(), registry=CollectorRegistry(), clock=clock)
    yield mon
    mon.stop()
