"""Predictive scaling: forecast the stress score `horizon_updates` ahead and scale before the market gets there.

Holt's linear smoothing (level + trend) of the *log* score, so a trend is a growth rate and the forecast stays
positive; the upper quantile adds `z_q * sigma * sqrt(h)` where sigma is an EWMA of one-step-ahead residuals. Holt
was chosen over an AR fit because it is O(1) per update, needs no refitting, and follows a trend (which a mean-
reverting AR(1) on volatility would fight) - the point is to see a rise coming, not to model vol precisely.
The upper forecast then runs through its own hysteresis classifier so a noisy forecast cannot flap the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from gpt_trader.scaling.conditions import ConditionClassifier, MarketCondition
from gpt_trader.scaling.config import ConditionConfig, ForecastConfig

# Scores are volatilities; clamp before taking logs so a flat price series cannot produce -inf.
_MIN_SCORE = 1e-6


@dataclass(frozen=True, slots=True)
class LoadForecast:
    """The forecast score `horizon` updates ahead, its upper quantile, and the condition that quantile implies."""

    score: float
    upper: float
    horizon: int
    condition: MarketCondition

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values for status and logs."""
        return {"score": self.score, "upper": self.upper, "horizon": self.horizon, "condition": self.condition.label}


class LoadForecaster:
    """Holt smoothing of the log stress score with an upper quantile; O(1) per update."""

    def __init__(self, config: ForecastConfig, conditions: ConditionConfig) -> None:
        self.config = config
        self._z = NormalDist().inv_cdf(config.upper_quantile)
        self._level: float | None = None
        self._trend = 0.0
        self._resid_var = 0.0
        self._classifier = ConditionClassifier(conditions)

    def update(self, score: float) -> LoadForecast:
        """Fold in the latest score and return the forecast for `horizon_updates` ahead."""
        cfg = self.config
        x = math.log(max(score, _MIN_SCORE))
        if self._level is None:
            self._level = x
        else:
            err = x - (self._level + self._trend)
            self._resid_var = (1 - cfg.residual_alpha) * self._resid_var + cfg.residual_alpha * err * err
            level = cfg.level_alpha * x + (1 - cfg.level_alpha) * (self._level + self._trend)
            self._trend = cfg.trend_beta * (level - self._level) + (1 - cfg.trend_beta) * self._trend
            self._level = level
        h = cfg.horizon_updates
        point = self._level + h * self._trend
        upper = point + self._z * math.sqrt(self._resid_var * h)
        condition = self._classifier.update(math.exp(upper))
        return LoadForecast(math.exp(point), math.exp(upper), h, condition)


def scale_ahead(current: MarketCondition, forecast: MarketCondition | None, max_steps: int) -> MarketCondition:
    """The condition to provision for: the current one, raised towards the forecast by at most `max_steps`.

    Forecasts only ever add capacity; scaling *down* waits for the classifier, whose dwell makes it deliberate.
    """
    if forecast is None or forecast <= current:
        return current
    return MarketCondition(min(int(forecast), int(current) + max_steps))
