"""Multi-asset portfolio environment: continuous target weights (for PPO), same timing and costs as `TradingEnv`.

The action a in [-1, 1]^A maps to target weights w = a * max_position (negative parts clipped to 0 when no
`position_fractions` entry is negative, i.e. shorts are not allowed), scaled down so sum |w| <= max_gross_leverage.
An asset whose weight would move by less than `rebalance_threshold` is held (no trade, no cost). Each asset's trade
pays the one cost model on its own participation and sigma. Buys are scaled down together when they would take
cash below -(max_gross_leverage - 1) * equity.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
from gpt_trader.ml.rl.env import OBS_BOUND, window_matrix
from gpt_trader.ml.rl.market import MarketArrays
from gpt_trader.ml.rl.reward import RewardShaper
from gpt_trader.trading.costs import CostModel

FloatArray = npt.NDArray[np.float64]


class PortfolioEnv(gym.Env[npt.NDArray[np.float32], npt.NDArray[np.float32]]):
    """Gymnasium env over A assets' decision indices [start, stop - 1); the action is the target weight vector."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention is a class-level dict

    def __init__(
        self,
        market: MarketArrays,
        *,
        start: int | None = None,
        stop: int | None = None,
        env_config: EnvConfig | None = None,
        reward_config: RewardConfig | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        super().__init__()
        self.config = env_config or EnvConfig()
        self.reward_config = reward_config or RewardConfig()
        self.cost_model = cost_model or CostModel()
        w = self.config.window_size
        n, n_assets, n_feat = market.features.shape
        self.start = w - 1 if start is None else start
        self.stop = n if stop is None else stop
        if self.start < w - 1:
            raise ValueError(f"start {self.start} leaves less than window_size {w} rows of history")
        if not self.start < self.stop - 1 <= n - 1:
            raise ValueError(f"decision range [{self.start}, {self.stop - 1}) is empty or beyond {n} rows")
        self.market = market
        self.n_assets = n_assets
        lo = self.start - w + 1
        self._windows = window_matrix(market.features[lo : self.stop].reshape(-1, n_assets * n_feat), w)
        self._close = market.close
        self._volume = market.volume
        self._sigma = market.sigma
        self._allow_short = min(self.config.position_fractions) < 0
        self._base_rate = float(self.cost_model.cost_rate(0.0, 0.0))
        self._impact_coef = float(self.cost_model.config.impact_coef)
        self.action_space = spaces.Box(-1.0, 1.0, (n_assets,), np.float32)
        dim = self._windows.shape[1] + n_assets + 1
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (dim,), np.float32)
        self._shaper = RewardShaper(self.reward_config)
        self._reset_account()

    @property
    def n_steps(self) -> int:
        """Decisions in one episode (one pass over the window)."""
        return self.stop - 1 - self.start

    def _reset_account(self) -> None:
        self._t = self.start
        self._cash = float(self.config.initial_cash_usd)
        self._shares = np.zeros(self.n_assets)
        self._equity = self._cash
        self._peak = self._cash
        self._drawdown = 0.0
        self._trades = 0
        self._costs_paid = 0.0
        self._last_cost = 0.0
        self._shaper.reset()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start a pass over the window with an all-cash book."""
        super().reset(seed=seed)
        self._reset_account()
        return self._observation(), self._info()

    def target_weights(self, action: npt.ArrayLike) -> FloatArray:
        """Map an action to admissible target weights (shorts, max position and gross leverage applied)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.n_assets,) or not np.isfinite(a).all():
            raise ValueError(f"action must be {self.n_assets} finite numbers, got {action!r}")
        w = np.clip(a, -1.0, 1.0) * self.config.max_position
        if not self._allow_short:
            w = np.maximum(w, 0.0)
        gross = float(np.abs(w).sum())
        if gross > self.config.max_gross_leverage:
            w *= self.config.max_gross_leverage / gross
        return w

    def trade_costs(self, shares: FloatArray, t: int) -> FloatArray:
        """Per-asset cash cost of trading `shares` (signed) at bar t through the cost model's rate."""
        qty = np.abs(shares)
        vol = self._volume[t]
        participation = np.where(vol > 0, qty / np.where(vol > 0, vol, 1.0), 1.0)
        rate = self._base_rate + self._impact_coef * self._sigma[t] * np.sqrt(participation)
        return np.where(qty > 0, qty * self._close[t] * rate, 0.0)

    def step(self, action: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Rebalance to the target weights at close_t, mark at close_{t+1}, return the reward."""
        t = self._t
        if t >= self.stop - 1:
            raise RuntimeError("step() called after the episode ended; call reset()")
        prices = self._close[t]
        equity = self._equity
        target = self.target_weights(action)
        current = self._shares * prices / equity if equity > 0 else np.zeros(self.n_assets)
        moves = np.abs(target - current) >= self.config.rebalance_threshold
        delta = np.where(moves, target * equity / prices - self._shares, 0.0)
        costs = self.trade_costs(delta, t)
        floor = -(self.config.max_gross_leverage - 1.0) * equity
        spend = float(delta @ prices + costs.sum())
        buys = delta > 0
        if self._cash - spend < floor and buys.any():
            # Scale all buys by one factor so the cash floor holds (sales and their costs stay as they are).
            buy_spend = float(delta[buys] @ prices[buys] + costs[buys].sum())
            scale = max(0.0, min(1.0, (self._cash - floor - (spend - buy_spend)) / buy_spend))
            delta = np.where(buys, delta * scale, delta)
            costs = self.trade_costs(delta, t)
        cost = float(costs.sum())
        self._cash -= float(delta @ prices) + cost
        self._shares = self._shares + delta
        self._trades += int(np.count_nonzero(delta))
        self._costs_paid += cost
        self._last_cost = cost
        t += 1
        self._t = t
        new_equity = self._cash + float(self._shares @ self._close[t])
        growth = new_equity / equity if equity > 0 else 0.0
        self._equity = new_equity
        self._peak = max(self._peak, new_equity)
        dd = 1.0 - new_equity / self._peak
        reward = self._shaper.reward(growth, dd - self._drawdown)
        self._drawdown = dd
        terminated = new_equity <= 0.0
        truncated = not terminated and t >= self.stop - 1
        return self._observation(), reward, terminated, truncated, self._info()

    def _weights(self) -> FloatArray:
        return self._shares * self._close[self._t] / self._equity if self._equity > 0 else np.zeros(self.n_assets)

    def _observation(self) -> npt.NDArray[np.float32]:
        k = self._windows.shape[1]
        obs = np.empty(k + self.n_assets + 1, dtype=np.float32)
        obs[:k] = self._windows[self._t - self.start]
        obs[k : k + self.n_assets] = self._weights()
        obs[-1] = self._drawdown
        return obs

    def _info(self) -> dict[str, Any]:
        values = self._shares * self._close[self._t]
        weights = self._weights()
        return {
            "t": self._t,
            "equity": self._equity,
            "cash": self._cash,
            "shares": self._shares.copy(),
            "position_value": float(values.sum()),
            "position": weights,
            "gross_exposure": float(np.abs(weights).sum()),
            "drawdown": self._drawdown,
            "trades": self._trades,
            "step_cost": self._last_cost,
            "costs_paid": self._costs_paid,
        }
