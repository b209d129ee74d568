"""Scaling policy: (condition, forecast, config) -> a `ScalingDecision` with its reason. Pure: no I/O, no clock.

Guarantees, property-tested: workers stay within [min_workers, max_workers] and the decision's cost never exceeds
`cost_limit_usd_per_hour`. When the wanted profile would break the budget the policy steps down to the most
capable profile that fits, trimming workers only as a last resort, and the reason says what it gave up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from gpt_trader.scaling.conditions import MarketCondition
from gpt_trader.scaling.config import ResourceProfile, ScalingConfig
from gpt_trader.scaling.cost import affordable_workers, allocation_cost_usd_per_hour
from gpt_trader.scaling.forecast import scale_ahead


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """One resource allocation and why it was chosen."""

    at: datetime
    condition: MarketCondition
    target: MarketCondition
    profile: MarketCondition
    workers: int
    cores: int
    memory_gb: float
    gpus: int
    cost_usd_per_hour: float
    live_concurrency_limit: int
    training_concurrency_limit: int
    training_paused: bool
    budget_limited: bool
    reason: str

    def same_allocation(self, other: ScalingDecision | None) -> bool:
        """Whether `other` asks the actuator for exactly the same thing (so nothing needs applying)."""
        return other is not None and self.actuation_key() == other.actuation_key()

    def actuation_key(self) -> tuple[int, int, int, bool]:
        """The fields the actuator acts on."""
        return (self.workers, self.live_concurrency_limit, self.training_concurrency_limit, self.training_paused)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for status and logs."""
        d = asdict(self)
        d["at"] = self.at.isoformat()
        for key in ("condition", "target", "profile"):
            d[key] = MarketCondition(d[key]).label
        return d


def _clamp(workers: int, config: ScalingConfig) -> int:
    return min(max(workers, config.min_workers), config.max_workers)


def decide_scaling(
    config: ScalingConfig,
    *,
    at: datetime,
    condition: MarketCondition,
    forecast: MarketCondition | None = None,
    score: float | None = None,
    forecast_upper: float | None = None,
) -> ScalingDecision:
    """Pick the allocation for `condition` (raised towards `forecast`), within worker bounds and the budget."""
    profiles = config.profiles.ordered()
    budget = config.cost_limit_usd_per_hour
    target = scale_ahead(condition, forecast, config.forecast.max_steps_ahead) if config.forecast.enabled else condition
    reasons = [f"market {condition.label}" + (f" (score {score:.3f})" if score is not None else "")]
    if target > condition:
        upper = f" (upper forecast {forecast_upper:.3f})" if forecast_upper is not None else ""
        reasons.append(f"forecast{upper} -> scaling ahead to {target.label}")

    chosen: tuple[MarketCondition, ResourceProfile, int] | None = None
    for level in range(int(target), -1, -1):
        profile = profiles[level]
        workers = _clamp(profile.workers, config)
        if allocation_cost_usd_per_hour(profile, workers) <= budget:
            chosen = (MarketCondition(level), profile, workers)
            break
    if chosen is None:
        # Every profile at or below the target breaks the budget at its clamped size: trim workers instead, on the
        # most capable profile at or below the target that still affords min_workers (else the nearest above).
        # The config validator guarantees some profile affords min_workers.
        order = [*range(int(target), -1, -1), *range(int(target) + 1, len(profiles))]
        for level in order:
            profile = profiles[level]
            workers = affordable_workers(profile, budget, _clamp(profile.workers, config))
            if workers >= config.min_workers:
                chosen = (MarketCondition(level), profile, workers)
                break
        else:
            raise ValueError(f"budget ${budget}/h cannot pay for min_workers={config.min_workers} at any profile")
    level, profile, workers = chosen

    budget_limited = level != target or workers != _clamp(profiles[level].workers, config)
    if budget_limited:
        wanted = profiles[target]
        wanted_cost = allocation_cost_usd_per_hour(wanted, _clamp(wanted.workers, config))
        reasons.append(
            f"budget: {target.label} profile costs ${wanted_cost:.2f}/h > limit ${budget:.2f}/h; "
            f"largest affordable is {level.label} with {workers} workers"
        )
    elif workers != profile.workers:
        reasons.append(f"workers clamped from {profile.workers} to [{config.min_workers}, {config.max_workers}]")

    scale = workers / profile.workers
    cost = allocation_cost_usd_per_hour(profile, workers)
    reasons.append(f"{level.label} profile: {workers} workers, ${cost:.2f}/h")
    if profile.pause_training:
        reasons.append("training pool paused")
    return ScalingDecision(
        at=at,
        condition=condition,
        target=target,
        profile=level,
        workers=workers,
        cores=math.ceil(profile.cores * scale),
        memory_gb=profile.memory_gb * scale,
        gpus=math.ceil(profile.gpus * scale),
        cost_usd_per_hour=cost,
        live_concurrency_limit=workers,
        training_concurrency_limit=profile.training_concurrency,
        training_paused=profile.pause_training,
        budget_limited=budget_limited,
        reason="; ".join(reasons),
    )
