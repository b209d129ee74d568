"""Predictive scaling: the forecast sees a rising load coming and the target moves before the market does."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.scaling import AutoScaler, RecordingActuator
from gpt_trader.scaling.conditions import ConditionClassifier, MarketCondition
from gpt_trader.scaling.config import ConditionConfig, ForecastConfig, ScalingConfig
from gpt_trader.scaling.forecast import LoadForecaster, scale_ahead

ACTIVE_BOUNDARY = ConditionConfig().vol_boundaries[1]  # NORMAL|ACTIVE at 20% vol


def test_forecaster_rising_load_triggers_scale_up_before_threshold_crossed():
    conditions, forecast_cfg = ConditionConfig(), ForecastConfig()
    forecaster = LoadForecaster(forecast_cfg, conditions)
    classifier = ConditionClassifier(conditions)
    rng = np.random.default_rng(2)
    # Vol climbing 12% -> 40% over 60 updates, with a little measurement noise.
    scores = np.linspace(0.12, 0.40, 60) * (1 + rng.uniform(-0.02, 0.02, size=60))
    first_target = first_crossed = first_classified = None
    for i, s in enumerate(scores):
        current = classifier.update(float(s))
        ahead = forecaster.update(float(s)).condition
        target = scale_ahead(current, ahead, forecast_cfg.max_steps_ahead)
        if first_target is None and target >= MarketCondition.ACTIVE:
            first_target = i
        if first_crossed is None and s >= ACTIVE_BOUNDARY:
            first_crossed = i
        if first_classified is None and current >= MarketCondition.ACTIVE:
            first_classified = i
    assert first_target is not None
    assert first_crossed is not None
    assert first_classified is not None
    assert first_target < first_crossed < first_classified


def test_forecaster_flat_load_has_no_trend_and_upper_above_point():
    forecaster = LoadForecaster(ForecastConfig(), ConditionConfig())
    rng = np.random.default_rng(4)
    for s in 0.15 * (1 + rng.normal(0, 0.05, size=300)):
        f = forecaster.update(float(s))
    assert f.score == pytest.approx(0.15, rel=0.1)
    assert f.score < f.upper < 0.15 * 1.3
    assert f.condition == MarketCondition.NORMAL


def test_forecaster_zero_score_stays_finite():
    forecaster = LoadForecaster(ForecastConfig(), ConditionConfig())
    for _ in range(10):
        f = forecaster.update(0.0)
    assert math.isfinite(f.score)
    assert math.isfinite(f.upper)
    assert f.condition == MarketCondition.QUIET


@pytest.mark.parametrize(
    ("current", "forecast", "steps", "expected"),
    [(1, 4, 1, 2), (1, 4, 2, 3), (1, 0, 1, 1), (3, 1, 1, 3), (2, None, 1, 2), (0, 4, 0, 0)],
)
def test_scale_ahead_raises_by_at_most_max_steps_and_never_lowers(current, forecast, steps, expected):
    fc = None if forecast is None else MarketCondition(forecast)
    assert scale_ahead(MarketCondition(current), fc, steps) == MarketCondition(expected)


def test_autoscaler_rising_volatility_provisions_active_before_market_is_active():
    clock = SimClock(datetime(2024, 1, 1, tzinfo=UTC))
    scaler = AutoScaler(ScalingConfig(), actuator=RecordingActuator(), clock=clock)
    price, decisions = 100.0, []
    # Daily returns alternate in sign with a size that grows steadily: annual vol from ~10% to ~45%.
    for i in range(120):
        daily = (0.10 + 0.35 * i / 119) / math.sqrt(252)
        price *= math.exp(daily if i % 2 else -daily)
        clock.advance(timedelta(days=1))
        decisions.append(scaler.update_market_data(price, 1e6))
    first_provisioned = next(i for i, d in enumerate(decisions) if d.profile >= MarketCondition.ACTIVE)
    first_classified = next(i for i, d in enumerate(decisions) if d.condition >= MarketCondition.ACTIVE)
    assert first_provisioned < first_classified
    ahead = decisions[first_provisioned]
    assert ahead.target > ahead.condition
    assert "scaling ahead" in ahead.reason
