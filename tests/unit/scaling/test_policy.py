"""Scaling policy: bounds and budget hold for every config and sequence (hypothesis); budget cuts are explained."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpt_trader.core.clock import SimClock
from gpt_trader.scaling import AutoScaler, RecordingActuator
from gpt_trader.scaling.conditions import MarketCondition
from gpt_trader.scaling.config import ProfilesConfig, ResourceProfile, ScalingConfig
from gpt_trader.scaling.policy import decide_scaling

AT = datetime(2024, 1, 1, tzinfo=UTC)
conditions = st.sampled_from(list(MarketCondition))


@st.composite
def scaling_configs(draw: st.DrawFn) -> ScalingConfig:
    """Valid random configs: any bounds, any budget that pays for the floor, profiles with non-decreasing cost."""
    costs = sorted(draw(st.lists(st.floats(0, 200, allow_nan=False), min_size=5, max_size=5)))
    profiles = [
        ResourceProfile(
            workers=draw(st.integers(1, 40)),
            cores=draw(st.integers(1, 64)),
            memory_gb=draw(st.floats(0.5, 256)),
            gpus=draw(st.integers(0, 8)),
            cost_usd_per_hour=c,
            training_concurrency=draw(st.integers(0, 8)),
            pause_training=draw(st.booleans()),
        )
        for c in costs
    ]
    min_workers = draw(st.integers(0, 30))
    try:
        return ScalingConfig(
            min_workers=min_workers,
            max_workers=draw(st.integers(max(min_workers, 1), 100)),
            cost_limit_usd_per_hour=draw(st.floats(0.01, 500, allow_nan=False)),
            profiles=ProfilesConfig(
                **dict(zip(("quiet", "normal", "active", "volatile", "extreme"), profiles, strict=True))
            ),
        )
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(config=scaling_configs(), steps=st.lists(st.tuples(conditions, st.none() | conditions), max_size=30))
def test_policy_any_config_and_sequence_stays_within_bounds_and_budget(config, steps):
    for condition, forecast in steps:
        d = decide_scaling(config, at=AT, condition=condition, forecast=forecast)
        assert config.min_workers <= d.workers <= config.max_workers
        assert d.cost_usd_per_hour <= config.cost_limit_usd_per_hour
        assert d.live_concurrency_limit == d.workers
        assert d.profile <= d.target or d.budget_limited
        assert d.target >= d.condition
        assert d.reason
        if d.budget_limited:
            assert "budget" in d.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    config=scaling_configs(),
    moves=st.lists(st.floats(-0.15, 0.15, allow_nan=False), min_size=30, max_size=120),
    volumes=st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=10),
)
def test_autoscaler_any_price_path_never_exceeds_budget_or_bounds(config, moves, volumes):
    clock = SimClock(AT)
    scaler = AutoScaler(config, actuator=RecordingActuator(), clock=clock)
    price = 100.0
    for i, move in enumerate(moves):
        price *= math.exp(move)
        clock.advance(timedelta(days=1))
        d = scaler.update_market_data(price, volumes[i % len(volumes)])
        assert config.min_workers <= d.workers <= config.max_workers
        assert d.cost_usd_per_hour <= config.cost_limit_usd_per_hour
    status = scaler.get_status()
    assert status["total_cost_per_hour"] <= config.cost_limit_usd_per_hour
    assert all(x["cost_usd_per_hour"] <= config.cost_limit_usd_per_hour for x in status["last_decisions"])


def test_policy_default_profiles_follow_seed_table():
    config = ScalingConfig()
    got = {
        c.label: (d.cores, d.memory_gb, d.cost_usd_per_hour)
        for c in MarketCondition
        for d in [decide_scaling(config, at=AT, condition=c)]
    }
    assert got == {
        "quiet": (2, 4, 2.0),
        "normal": (4, 8, 5.0),
        "active": (8, 16, 12.0),
        "volatile": (12, 24, 20.0),
        "extreme": (16, 32, 30.0),
    }


def test_policy_extreme_over_budget_picks_largest_affordable_and_says_so():
    config = ScalingConfig(cost_limit_usd_per_hour=25.0)
    d = decide_scaling(config, at=AT, condition=MarketCondition.EXTREME)
    assert d.profile == MarketCondition.VOLATILE
    assert d.cost_usd_per_hour == 20.0
    assert d.budget_limited
    assert "budget: extreme profile costs $30.00/h > limit $25.00/h" in d.reason
    assert "largest affordable is volatile" in d.reason


def test_policy_min_workers_forcing_costlier_allocation_steps_down_to_affordable_profile():
    # min_workers=8 lifts NORMAL to 8 workers at $1.25/worker-hour = $10 > $8; QUIET's 8 workers cost exactly $8.
    config = ScalingConfig(min_workers=8, max_workers=20, cost_limit_usd_per_hour=8.0)
    d = decide_scaling(config, at=AT, condition=MarketCondition.NORMAL)
    assert (d.profile, d.workers, d.cost_usd_per_hour) == (MarketCondition.QUIET, 8, 8.0)
    assert d.budget_limited


def test_policy_extreme_pauses_training_and_normal_resumes_it():
    config = ScalingConfig()
    extreme = decide_scaling(config, at=AT, condition=MarketCondition.EXTREME)
    normal = decide_scaling(config, at=AT, condition=MarketCondition.NORMAL)
    assert extreme.training_paused
    assert "training pool paused" in extreme.reason
    assert not normal.training_paused
    assert normal.training_concurrency_limit == 2


def test_policy_workers_clamped_to_max_workers_is_explained():
    config = ScalingConfig(min_workers=1, max_workers=6)
    d = decide_scaling(config, at=AT, condition=MarketCondition.EXTREME)
    assert d.workers == 6
    assert d.cost_usd_per_hour == pytest.approx(30.0 * 6 / 16)
    assert "clamped" in d.reason


def test_policy_forecast_disabled_ignores_forecast():
    config = ScalingConfig(forecast={"enabled": False})
    d = decide_scaling(config, at=AT, condition=MarketCondition.NORMAL, forecast=MarketCondition.EXTREME)
    assert d.target == MarketCondition.NORMAL
