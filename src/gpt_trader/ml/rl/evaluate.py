"""Held-out evaluation of a policy and of the baselines (buy-and-hold, flat, random) in the same environment.

Every figure comes from running the environment (so agent and baselines pay the same costs) and is summarized
by the shared `gpt_trader.ml.evaluation.performance`. Sharpe etc. are per-bar figures annualized with the bars
per year observed in the held-out timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.ml.evaluation import Performance, performance

FloatArray = npt.NDArray[np.float64]
Policy = Callable[[npt.NDArray[np.float32]], Any]
# Figures reported per agent, in this order (DVC metrics and the report use the same keys).
FIGURES = (
    "sharpe_ratio",
    "total_return",
    "annual_return",
    "max_drawdown",
    "win_rate",
    "n_trades",
    "turnover",
    "costs_paid",
)


@dataclass(frozen=True, slots=True)
class EpisodeTrace:
    """One pass over an env: per-step net returns, exposure held (gross for portfolios), costs as equity fractions."""

    net_returns: FloatArray
    exposure: FloatArray
    costs: FloatArray
    equity: FloatArray
    n_trades: int

    def performance(self, periods_per_year: float) -> Performance:
        """Shared-module summary of the trace."""
        return performance(self.net_returns, periods_per_year, positions=self.exposure, costs=self.costs)

    def figures(self, periods_per_year: float) -> dict[str, float]:
        """The reported figures (FIGURES) of this trace."""
        perf = self.performance(periods_per_year)
        return {
            "sharpe_ratio": perf.sharpe,
            "total_return": perf.total_return,
            "annual_return": perf.annual_return,
            "max_drawdown": perf.max_drawdown,
            "win_rate": perf.win_rate,
            "n_trades": float(self.n_trades),
            "turnover": perf.turnover,
            "costs_paid": perf.costs_paid,
        }


def run_episode(env: Any, policy: Policy, *, seed: int | None = None) -> EpisodeTrace:
    """Roll `policy` through one full episode of `env` (a TradingEnv or PortfolioEnv)."""
    obs, info = env.reset(seed=seed)
    equity = [float(info["equity"])]
    nets, exposure, costs = [], [], []
    done = False
    while not done:
        prev_equity, t = float(info["equity"]), int(info["t"])
        obs, _, terminated, truncated, info = env.step(policy(obs))
        held = np.asarray(info["shares"], dtype=float) * env.market.close[t]
        exposure.append(float(np.abs(held).sum() / prev_equity) * (1.0 if np.sum(held) >= 0 else -1.0))
        costs.append(float(info["step_cost"]) / prev_equity)
        nets.append(float(info["equity"]) / prev_equity - 1.0)
        equity.append(float(info["equity"]))
        done = terminated or truncated
    return EpisodeTrace(np.array(nets), np.array(exposure), np.array(costs), np.array(equity), int(info["trades"]))


def model_policy(model: Any) -> Policy:
    """Deterministic SB3 policy as a plain function."""

    def act(obs: npt.NDArray[np.float32]) -> Any:
        action, _ = model.predict(obs, deterministic=True)
        return action

    return act


def constant_policy(action: Any) -> Policy:
    """Always the same action (buy-and-hold = the largest long fraction, flat = 0)."""
    return lambda _obs: action


def random_policy(action_space: Any, seed: int) -> Policy:
    """Uniformly random actions from a seeded copy of the action space."""
    import copy

    space = copy.deepcopy(action_space)
    space.seed(seed)
    return lambda _obs: space.sample()


def baseline_figures(
    make_env: Callable[[], Any], periods_per_year: float, *, random_runs: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Buy-and-hold, flat and random (mean over `random_runs` seeds) in fresh copies of the held-out env."""
    import gymnasium as gym

    env = make_env()
    out: dict[str, dict[str, float]] = {}
    if isinstance(env.action_space, gym.spaces.Discrete):
        fractions = list(env.config.position_fractions)
        long_action = int(np.argmax(fractions))
        out["buy_and_hold"] = run_episode(env, constant_policy(long_action)).figures(periods_per_year)
        if 0.0 in fractions:
            out["flat"] = run_episode(env, constant_policy(fractions.index(0.0))).figures(periods_per_year)
    else:
        n = env.action_space.shape[0]
        equal = np.full(n, 1.0 / n, dtype=np.float32) * min(1.0, env.config.max_gross_leverage)
        out["buy_and_hold"] = run_episode(env, constant_policy(equal / env.config.max_position)).figures(
            periods_per_year
        )
        out["flat"] = run_episode(env, constant_policy(np.zeros(n, dtype=np.float32))).figures(periods_per_year)
    runs = [
        run_episode(make_env(), random_policy(env.action_space, seed + k)).figures(periods_per_year)
        for k in range(random_runs)
    ]
    out["random"] = mean_figures(runs)
    return out


def mean_figures(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each figure over runs."""
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def aggregate(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean as `<figure>` and sample std (0 for one run) as `<figure>_std` over seeds."""
    out: dict[str, float] = {}
    for k in runs[0]:
        values = np.array([r[k] for r in runs], dtype=float)
        out[k] = float(values.mean())
        out[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def annualization(ts: npt.NDArray[np.datetime64]) -> float:
    """Bars per year observed in `ts` (through the shared `periods_per_year`)."""
    from gpt_trader.ml.evaluation import periods_per_year

    ppy = periods_per_year(ts)
    if not math.isfinite(ppy) or ppy <= 0:
        raise ValueError(f"cannot infer bars per year from {len(ts)} timestamps")
    return ppy
