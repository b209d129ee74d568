"""Config section for auto-scaling: worker bounds, the hourly budget, and the nested classifier, forecast, profile
and actuator sections. Every section is frozen and refuses unknown keys, so `ScalingConfig()` works bare."""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from gpt_trader.config_base import Section, fold_seed_alias

# Seconds in one market year of 252 trading days: the equity convention for annualizing daily volatility.
TRADING_YEAR_SECS = 252 * 86_400.0
# Seconds in one calendar year: for markets that trade 24x7 (crypto, the simulated source).
CALENDAR_YEAR_SECS = 365.25 * 86_400.0


class ConditionConfig(Section):
    """Market-condition classifier: rolling windows, the volatility boundaries and the hysteresis that stops flapping.

    The stress score is the annualized realized volatility of log returns, times an activity multiplier
    `1 + activity_weight * clip(z, 0, activity_z_cap)` where `z` is the larger of the volume and tick-rate z-scores
    (so in an ordinary-activity market the score *is* the realized vol). `vol_boundaries` are the four scores that
    separate QUIET|NORMAL|ACTIVE|VOLATILE|EXTREME; the defaults sit near the geometric midpoints of the simulated
    source's regime vols (8/16/28/50/90%) and put the S&P 500's 20-year median (14%) in NORMAL.
    """

    vol_boundaries: tuple[float, float, float, float] = (0.10, 0.20, 0.35, 0.60)
    # A boundary is crossed upwards only above `b * (1 + hysteresis_band)` and downwards only below
    # `b * (1 - hysteresis_band)`: a score hovering around `b` keeps the condition it has.
    hysteresis_band: float = Field(default=0.1, ge=0, lt=1)
    # Updates a condition must have lasted before the classifier may move up / down. Up is quick (capacity first),
    # down is slow (scaling in too early costs more than a few idle workers).
    min_dwell_up_updates: int = Field(default=1, ge=1)
    min_dwell_down_updates: int = Field(default=10, ge=1)
    # Realized vol is the larger of these two windows' estimates (in updates): the fast one reacts to a shock within
    # days, the slow one (a trading month) holds the condition until the shock has passed.
    vol_window: int = Field(default=21, ge=2)
    fast_vol_window: int = Field(default=10, ge=2)
    volume_window: int = Field(default=63, ge=3)
    tick_window: int = Field(default=10, ge=2)
    activity_weight: float = Field(default=0.1, ge=0)
    activity_z_cap: float = Field(default=3.0, ge=0)
    # Length of one update in seconds when updates are bars (86400: daily bars); None means ticks, whose variance
    # is scaled by the time actually elapsed between them (event time, or the injected clock).
    bar_interval_secs: float | None = Field(default=86_400.0, gt=0)
    # Seconds in the year the volatility is annualized over: 252 trading days for equities, CALENDAR_YEAR_SECS
    # for 24x7 markets. Annual vol = sqrt(mean squared return per bar * year_secs / bar_interval_secs).
    year_secs: float = Field(default=TRADING_YEAR_SECS, gt=0)

    @model_validator(mode="after")
    def _boundaries_increasing(self) -> ConditionConfig:
        b = self.vol_boundaries
        if any(x <= 0 for x in b) or any(lo >= hi for lo, hi in itertools.pairwise(b)):
            raise ValueError(f"vol_boundaries must be positive and strictly increasing, got {b}")
        return self


class ForecastConfig(Section):
    """Holt (level + trend) smoothing of the log stress score with an upper quantile from the residual spread."""

    enabled: bool = True
    level_alpha: float = Field(default=0.3, gt=0, le=1)
    trend_beta: float = Field(default=0.2, ge=0, le=1)
    residual_alpha: float = Field(default=0.1, gt=0, le=1)
    horizon_updates: int = Field(default=5, ge=1)
    upper_quantile: float = Field(default=0.8, gt=0.5, lt=1)
    # The forecast may lift the target at most this many conditions above the classified one: enough to scale
    # ahead of a rising market without letting one noisy forecast buy the EXTREME profile.
    max_steps_ahead: int = Field(default=1, ge=0, le=4)


class ResourceProfile(Section):
    """Resources for one market condition, as totals for `workers` workers."""

    workers: int = Field(ge=1)
    cores: int = Field(ge=1)
    memory_gb: float = Field(gt=0)
    gpus: int = Field(default=0, ge=0)
    cost_usd_per_hour: float = Field(ge=0)
    # Flow runs the training pool may run at once; the live pool's limit follows the worker count.
    training_concurrency: int = Field(default=1, ge=0)
    pause_training: bool = False


class ProfilesConfig(Section):
    """One profile per condition: the seed's Resource Efficiency table plus VOLATILE between ACTIVE and EXTREME."""

    quiet: ResourceProfile = ResourceProfile(
        workers=2, cores=2, memory_gb=4, cost_usd_per_hour=2.0, training_concurrency=4
    )
    normal: ResourceProfile = ResourceProfile(
        workers=4, cores=4, memory_gb=8, cost_usd_per_hour=5.0, training_concurrency=2
    )
    active: ResourceProfile = ResourceProfile(
        workers=8, cores=8, memory_gb=16, cost_usd_per_hour=12.0, training_concurrency=1
    )
    volatile: ResourceProfile = ResourceProfile(
        workers=12, cores=12, memory_gb=24, cost_usd_per_hour=20.0, training_concurrency=1
    )
    extreme: ResourceProfile = ResourceProfile(
        workers=16, cores=16, memory_gb=32, cost_usd_per_hour=30.0, training_concurrency=0, pause_training=True
    )

    def ordered(self) -> tuple[ResourceProfile, ...]:
        """Profiles from QUIET to EXTREME."""
        return (self.quiet, self.normal, self.active, self.volatile, self.extreme)

    @model_validator(mode="after")
    def _cost_non_decreasing(self) -> ProfilesConfig:
        # "The largest affordable profile" must mean the most capable one: costs may not fall as conditions worsen.
        costs = [p.cost_usd_per_hour for p in self.ordered()]
        if any(lo > hi for lo, hi in itertools.pairwise(costs)):
            raise ValueError(f"profile costs must not decrease from quiet to extreme, got {costs}")
        return self


class ActuatorConfig(Section):
    """Where decisions go. `recording` (default) needs no server; `prefect` drives real work pools and workers."""

    kind: Literal["recording", "prefect"] = "recording"
    live_pool: str = "gpt-trader-live"
    training_pool: str = "gpt-trader-training"
    # Local `prefect worker start` processes for the live pool: min(decided workers, this). 0 = pool limits only.
    max_local_workers: int = Field(default=0, ge=0, le=16)
    worker_stop_timeout_secs: float = Field(default=10.0, gt=0)
    # After a failed apply (API down), retry the latest decision this long after, unless a newer one arrives first.
    retry_secs: float = Field(default=2.0, gt=0)


class ScalingConfig(Section):
    """Worker bounds, the hourly budget (never exceeded) and the nested sections."""

    min_workers: int = Field(default=2, ge=0)
    max_workers: int = Field(default=20, ge=1)
    # The seed's config calls it `cost_limit`; accepted as an alias so a seed-style file loads unchanged.
    cost_limit_usd_per_hour: float = Field(
        default=100.0, gt=0, validation_alias=AliasChoices("cost_limit_usd_per_hour", "cost_limit")
    )
    conditions: ConditionConfig = ConditionConfig()
    forecast: ForecastConfig = ForecastConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    actuator: ActuatorConfig = ActuatorConfig()
    # Decisions kept for `get_status()` (the log has them all).
    decision_history: int = Field(default=20, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_key(cls, data: Any) -> Any:
        return fold_seed_alias(cls, data, "cost_limit_usd_per_hour", "cost_limit")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ScalingConfig:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) exceeds max_workers ({self.max_workers})")
        # The budget must afford the floor, or "never exceed the budget" and "never below min_workers" collide.
        # Priced exactly as cost.allocation_cost_usd_per_hour does, so the two can never disagree by rounding.
        floor_costs = [p.cost_usd_per_hour * self.min_workers / p.workers for p in self.profiles.ordered()]
        if min(floor_costs) > self.cost_limit_usd_per_hour:
            raise ValueError(
                f"cost_limit_usd_per_hour ({self.cost_limit_usd_per_hour}) cannot pay for min_workers "
                f"({self.min_workers}) at any profile (cheapest ${min(floor_costs):.4g}/h)"
            )
        return self
