"""Reward shaping shared by both environments: log return or differential Sharpe ratio, minus a drawdown penalty.

- `log_return`: scale * log(equity_{t+1} / equity_t), after costs.
- `differential_sharpe`: Moody & Saffell (1998) D_t = (B dA - A dB / 2) / (B - A^2)^(3/2) with exponential moving
  moments A (mean) and B (second moment) of the net simple return at rate `dsr_eta`; it is the first-order gain
  of the moving Sharpe ratio from this step's return, so summing it optimizes risk-adjusted return online.
- Drawdown penalty: minus scale * drawdown_penalty * (increase of drawdown this step), so only new drawdown costs.
"""

from __future__ import annotations

import math

from gpt_trader.ml.rl.config import RewardConfig

# Wiping out equity gives log(0); this floor keeps the terminal reward finite (and very negative).
MIN_GROWTH = 1e-6


class RewardShaper:
    """Stateful per-episode reward: call `reset()` at episode start and `reward()` once per step."""

    __slots__ = ("_a", "_b", "_dsr", "_eta", "_penalty", "_scale")

    def __init__(self, config: RewardConfig) -> None:
        self._dsr = config.kind == "differential_sharpe"
        self._scale = config.scale
        self._eta = config.dsr_eta
        self._penalty = config.drawdown_penalty * config.scale
        self._a = 0.0
        self._b = 0.0

    def reset(self) -> None:
        """Forget the moving moments (new episode)."""
        self._a = 0.0
        self._b = 0.0

    def reward(self, growth: float, drawdown_increase: float) -> float:
        """Reward for an equity growth factor (equity_{t+1} / equity_t) and the step's change in drawdown."""
        base = self.differential_sharpe(growth - 1.0) if self._dsr else self._scale * math.log(max(growth, MIN_GROWTH))
        if drawdown_increase > 0.0 and self._penalty:
            base -= self._penalty * drawdown_increase
        return base

    def log_return_terms(self) -> tuple[float, float] | None:
        """(scale, drawdown penalty) of a stateless `log_return` shaper, for `TradingEnv.step`, which spells out
        `reward`'s arithmetic inline to save the call (about a tenth of a step); None for the differential Sharpe
        ratio. tests/unit/ml/rl/test_env.py pins the env's rewards to `reward` for both kinds."""
        return None if self._dsr else (self._scale, self._penalty)

    def differential_sharpe(self, r: float) -> float:
        """D_t for return r, then update the moments; 0 until the variance estimate is positive."""
        a, b = self._a, self._b
        da, db = r - a, r * r - b
        var = b - a * a
        d = (b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0
        self._a = a + self._eta * da
        self._b = b + self._eta * db
        return d
