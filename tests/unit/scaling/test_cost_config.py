"""Pricing, spend tracking over injected time, and the config's refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpt_trader.core.clock import SimClock
from gpt_trader.scaling.config import ConditionConfig, ProfilesConfig, ResourceProfile, ScalingConfig
from gpt_trader.scaling.cost import CostTracker, affordable_workers, allocation_cost_usd_per_hour

PROFILE = ResourceProfile(workers=4, cores=4, memory_gb=8, cost_usd_per_hour=5.0)


def test_allocation_cost_scales_with_workers():
    assert allocation_cost_usd_per_hour(PROFILE, 4) == 5.0
    assert allocation_cost_usd_per_hour(PROFILE, 8) == 10.0
    assert allocation_cost_usd_per_hour(PROFILE, 0) == 0.0


@pytest.mark.parametrize(("budget", "expected"), [(5.0, 4), (4.99, 3), (100.0, 20), (0.5, 0)])
def test_affordable_workers_largest_count_within_budget(budget, expected):
    assert affordable_workers(PROFILE, budget, upper=20) == expected


def test_cost_tracker_integrates_rate_over_clock_time():
    clock = SimClock(datetime(2024, 1, 1, tzinfo=UTC))
    tracker = CostTracker()
    tracker.set_rate(12.0, clock.now())
    clock.advance(timedelta(minutes=30))
    tracker.set_rate(30.0, clock.now())
    clock.advance(timedelta(hours=2))
    assert tracker.accrue(clock.now()) == pytest.approx(6.0 + 60.0)


def test_config_defaults_keep_seed_fields():
    config = ScalingConfig()
    assert (config.min_workers, config.max_workers, config.cost_limit_usd_per_hour) == (2, 20, 100.0)
    assert config.actuator.kind == "recording"


def test_config_seed_cost_limit_name_sets_budget():
    # `cost_limit` is the seed's name; the canonical `cost_limit_usd_per_hour` is what the rest of the code reads.
    config = ScalingConfig.model_validate({"min_workers": 2, "max_workers": 20, "cost_limit": 12})
    assert config.cost_limit_usd_per_hour == 12.0
    assert "cost_limit" not in config.model_dump()
    with pytest.raises(ValidationError, match="cannot pay for min_workers"):
        ScalingConfig.model_validate({"min_workers": 10, "cost_limit": 5})


def test_config_seed_and_canonical_cost_limit_must_agree():
    config = ScalingConfig.model_validate({"cost_limit": 50, "cost_limit_usd_per_hour": "50.0"})
    assert config.cost_limit_usd_per_hour == 50.0
    with pytest.raises(ValidationError, match="seed alias 'cost_limit' \\(60\\) are both set"):
        ScalingConfig.model_validate({"cost_limit": 60, "cost_limit_usd_per_hour": 50})


def test_config_unknown_nested_key_refused():
    with pytest.raises(ValidationError, match="extra"):
        ScalingConfig(conditions={"vol_windw": 10})


def test_config_budget_below_min_workers_floor_refused():
    with pytest.raises(ValidationError, match="cannot pay for min_workers"):
        ScalingConfig(min_workers=10, cost_limit_usd_per_hour=5.0)


def test_config_unordered_vol_boundaries_refused():
    with pytest.raises(ValidationError, match="strictly increasing"):
        ConditionConfig(vol_boundaries=(0.1, 0.3, 0.2, 0.6))


def test_config_profile_cheaper_for_worse_market_refused():
    with pytest.raises(ValidationError, match="must not decrease"):
        ProfilesConfig(extreme=ResourceProfile(workers=16, cores=16, memory_gb=32, cost_usd_per_hour=1.0))


def test_config_min_above_max_refused():
    with pytest.raises(ValidationError, match="exceeds max_workers"):
        ScalingConfig(min_workers=5, max_workers=4)
