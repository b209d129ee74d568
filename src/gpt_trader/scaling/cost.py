"""Cost in $/hour: the price of an allocation, the largest worker count a budget affords, and spend over time."""

from __future__ import annotations

import math
from datetime import datetime

from gpt_trader.scaling.config import ResourceProfile


def allocation_cost_usd_per_hour(profile: ResourceProfile, workers: int) -> float:
    """Hourly cost of running `profile` with `workers` workers: its total scaled by `workers / profile.workers`.

    Profiles are priced as totals (the seed's table), so a worker count clamped to the configured bounds is priced
    at that profile's per-worker rate. This one function prices every decision, so the budget check and the
    reported cost can never disagree.
    """
    return profile.cost_usd_per_hour * workers / profile.workers


def affordable_workers(profile: ResourceProfile, budget_usd_per_hour: float, upper: int) -> int:
    """The most workers (at most `upper`) of `profile` whose cost stays within the budget."""
    if profile.cost_usd_per_hour == 0:
        return upper
    workers = min(upper, math.floor(budget_usd_per_hour * profile.workers / profile.cost_usd_per_hour))
    # Float division can round up by one ulp; step down until the priced cost really fits.
    while workers > 0 and allocation_cost_usd_per_hour(profile, workers) > budget_usd_per_hour:
        workers -= 1
    return max(workers, 0)


class CostTracker:
    """Integrates the hourly rate over (injected) time: the dollars spent since the first rate was set."""

    def __init__(self) -> None:
        self.rate_usd_per_hour = 0.0
        self.spent_usd = 0.0
        self._since: datetime | None = None

    def set_rate(self, rate_usd_per_hour: float, now: datetime) -> None:
        """Charge the previous rate up to `now`, then switch to the new one."""
        self.accrue(now)
        self.rate_usd_per_hour = rate_usd_per_hour

    def accrue(self, now: datetime) -> float:
        """Charge the current rate up to `now` and return the total spent."""
        if self._since is not None and now > self._since:
            self.spent_usd += self.rate_usd_per_hour * (now - self._since).total_seconds() / 3600.0
        if self._since is None or now > self._since:
            self._since = now
        return self.spent_usd
