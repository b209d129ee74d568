"""PrefectActuator and AutoScaler against a real Prefect server: pool limits, pausing, worker processes."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime

import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.scaling import AutoScaler, PrefectActuator, ScalingConfig, decide_scaling
from gpt_trader.scaling.conditions import MarketCondition
from gpt_trader.scaling.config import ActuatorConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
AT = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def prefect_api():
    """A real temporary Prefect server (API + SQLite) for this module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def read_pool(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_work_pool(name)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_prefect_actuator_decisions_set_pool_limits_and_pause_training(prefect_api):
    actuator = PrefectActuator(ActuatorConfig(kind="prefect"))
    actuator.ensure_pools()
    actuator.ensure_pools()  # idempotent
    config = ScalingConfig()

    actuator.apply(decide_scaling(config, at=AT, condition=MarketCondition.NORMAL))
    live, training = read_pool("gpt-trader-live"), read_pool("gpt-trader-training")
    assert (live.type, live.concurrency_limit) == ("process", 4)
    assert (training.concurrency_limit, training.is_paused) == (2, False)

    actuator.apply(decide_scaling(config, at=AT, condition=MarketCondition.EXTREME))
    live, training = read_pool("gpt-trader-live"), read_pool("gpt-trader-training")
    assert live.concurrency_limit == 16
    assert training.is_paused
    assert training.status.value == "PAUSED"

    actuator.apply(decide_scaling(config, at=AT, condition=MarketCondition.QUIET))
    live, training = read_pool("gpt-trader-live"), read_pool("gpt-trader-training")
    assert live.concurrency_limit == 2
    assert (training.concurrency_limit, training.is_paused) == (4, False)
    actuator.close()


def test_prefect_actuator_workers_start_one_then_scale_to_zero_processes_gone(prefect_api):
    from prefect.client.orchestration import get_client

    actuator = PrefectActuator(ActuatorConfig(kind="prefect", max_local_workers=1, worker_stop_timeout_secs=15))
    actuator.ensure_pools()
    actuator.apply(decide_scaling(ScalingConfig(), at=AT, condition=MarketCondition.ACTIVE))
    try:
        assert len(actuator.workers) == 1  # 8 decided, bounded by max_local_workers
        proc = actuator.workers[0]

        def registered() -> bool:
            assert proc.poll() is None, "worker process exited early"
            with get_client(sync_client=True) as client:
                return any(
                    w.name.startswith("gpt-trader-autoscaled")
                    for w in client.read_workers_for_work_pool("gpt-trader-live")
                )

        wait_until(registered, timeout=60, what="the worker to register with gpt-trader-live")
    finally:
        actuator.scale_workers(0)
    assert actuator.workers == []
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the whole process group is gone, not just its leader


def test_autoscaler_prefect_sp500_crash_pauses_training_then_calm_resumes(prefect_api):
    bars = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d"))
    actuator = PrefectActuator(ActuatorConfig(kind="prefect"))
    actuator.ensure_pools()
    clock = SimClock(datetime(2008, 1, 1, tzinfo=UTC))
    scaler = AutoScaler(ScalingConfig(), actuator=actuator, clock=clock)

    def feed(start: date, end: date) -> None:
        for ts, price, volume in zip(bars["ts"], bars["close"], bars["volume"], strict=True):
            if start <= ts.date() <= end:
                clock.set(ts)
                scaler.update_market_data(price, volume, ts=ts)

    with scaler:
        feed(date(2008, 6, 1), date(2008, 10, 31))
        assert scaler.wait_applied(timeout=30)
        assert scaler.condition == MarketCondition.EXTREME
        assert read_pool("gpt-trader-training").is_paused
        assert read_pool("gpt-trader-live").concurrency_limit == 16

        feed(date(2008, 11, 1), date(2017, 12, 31))
        assert scaler.wait_applied(timeout=30)
        status = scaler.get_status()
    assert status["market_condition"] in {"quiet", "normal"}
    assert not status["errors"]
    training, live = read_pool("gpt-trader-training"), read_pool("gpt-trader-live")
    assert not training.is_paused
    assert live.concurrency_limit == status["resources"]["live_concurrency_limit"]
    assert status["applied"]["workers"] == status["resources"]["workers"]
