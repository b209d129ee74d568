"""AutoScaler end to end without a server: the seed's Example 5, status, the actuator thread and its failures."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.scaling import AutoScaler, RecordingActuator, ScalingConfig, ScalingDecision
from gpt_trader.scaling.conditions import MarketCondition

# The seed's Example 5 with `bot` -> `gpt_trader`, verbatim otherwise.
EXAMPLE_5 = """
from gpt_trader.scaling import AutoScaler

# Create auto-scaler
scaler = AutoScaler()

# Start auto-scaling
scaler.start()

# Feed market data
for price, volume in market_stream:
    scaler.update_market_data(price, volume)

    # Check status
    status = scaler.get_status()
    print(f"Market: {status['market_condition']}")
    print(f"Cost: ${status['total_cost_per_hour']:.2f}/hour")
"""


def _slice(spx: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    lo, hi = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (start, end))
    return spx.filter(pl.col("ts").is_between(lo, hi))


def test_example_5_real_sp500_2008_runs_and_reaches_extreme(spx, capsys):
    bars = _slice(spx, date(2008, 6, 1), date(2008, 11, 28))
    namespace: dict[str, Any] = {"market_stream": zip(bars["close"], bars["volume"], strict=True)}
    exec(compile(EXAMPLE_5, "example_5", "exec"), namespace)
    scaler = namespace["scaler"]
    try:
        assert scaler.wait_applied(timeout=10)
        status = scaler.get_status()
    finally:
        scaler.stop()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * bars.height
    assert lines[0].startswith("Market: ")
    assert lines[1].startswith("Cost: $")
    assert "Market: extreme" in lines
    assert "Cost: $30.00/hour" in lines
    assert isinstance(scaler.actuator, RecordingActuator)
    assert scaler.actuator.closed
    assert len(scaler.actuator.applied) >= 2
    assert status["market_condition"] == "extreme"
    assert status["resources"]["training_paused"]
    assert not scaler.running


def test_autoscaler_no_arguments_needs_no_server_and_stops_twice():
    scaler = AutoScaler()
    scaler.start()
    scaler.start()
    scaler.stop()
    scaler.stop()
    assert not scaler.running
    assert not any(t.name == "autoscaler-actuator" for t in threading.enumerate())


def test_autoscaler_status_has_condition_resources_cost_and_reasoned_decisions(spx):
    clock = SimClock(datetime(2011, 7, 1, tzinfo=UTC))
    scaler = AutoScaler(clock=clock)
    bars = _slice(spx, date(2011, 6, 1), date(2011, 8, 31))
    for ts, price, volume in zip(bars["ts"], bars["close"], bars["volume"], strict=True):
        clock.set(max(clock.now(), ts))
        scaler.update_market_data(price, volume, ts=ts)
    status = scaler.get_status()
    assert status["market_condition"] in {"volatile", "extreme"}
    assert {"workers", "cores", "memory_gb", "gpus", "live_concurrency_limit"} <= status["resources"].keys()
    assert status["total_cost_per_hour"] >= 20.0
    assert status["features"]["ready"]
    assert status["features"]["realized_vol"] > 0.35
    assert status["forecast"]["upper"] >= status["forecast"]["score"]
    decisions = status["last_decisions"]
    assert next(d["condition"] for d in decisions) == "normal"  # the initial decision
    assert all(d["reason"].startswith("market ") for d in decisions)
    assert decisions[-1]["condition"] == status["market_condition"]
    assert status["spent_usd"] > 0


def test_autoscaler_applies_only_changes_and_only_while_started():
    clock = SimClock(datetime(2024, 1, 1, tzinfo=UTC))
    actuator = RecordingActuator()
    scaler = AutoScaler(actuator=actuator, clock=clock)
    price = 100.0
    for i in range(60):  # calm: 5% vol, before start: decided, not applied
        price *= 1.003 if i % 2 else 1 / 1.003
        clock.advance(timedelta(days=1))
        scaler.update_market_data(price, 1e6)
    assert scaler.condition == MarketCondition.QUIET
    assert not actuator.applied
    scaler.start()
    assert scaler.wait_applied(timeout=10)
    assert [d.profile for d in actuator.applied] == [MarketCondition.QUIET]
    for _ in range(20):  # the same calm market: nothing new to apply
        price *= 1.003 if price < 100 else 1 / 1.003
        clock.advance(timedelta(days=1))
        scaler.update_market_data(price, 1e6)
    assert scaler.wait_applied(timeout=10)
    assert len(actuator.applied) == 1
    scaler.stop()
    assert actuator.closed


class FlakyActuator(RecordingActuator):
    """Fails the first `failures` applies, like a Prefect API that is briefly down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def apply(self, decision: ScalingDecision) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("prefect api unreachable")
        super().apply(decision)


def test_autoscaler_actuator_failure_is_reported_and_retried():
    scaler = AutoScaler(ScalingConfig(actuator={"retry_secs": 0.05}), actuator=FlakyActuator(failures=2))
    scaler.start()
    try:
        assert scaler.wait_applied(timeout=15)
        status = scaler.get_status()
    finally:
        scaler.stop()
    assert status["errors"]
    assert "ConnectionError: prefect api unreachable" in status["errors"][0]
    assert status["applied"] is not None


def test_autoscaler_context_manager_starts_and_stops():
    with AutoScaler(ScalingConfig(min_workers=1)) as scaler:
        assert scaler.running
    assert not scaler.running


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 0.0])
def test_autoscaler_bad_price_raises_value_error(bad):
    with pytest.raises(ValueError, match="price must be positive"):
        AutoScaler().update_market_data(bad, 1.0)
