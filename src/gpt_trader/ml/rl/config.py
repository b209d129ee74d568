"""Config section for deep-RL training (bare constructor = the seed's defaults).

An *episode* is one pass over the training window: `episodes` x (decision steps in the training window) gives
the timesteps SB3 trains for, unless `total_timesteps` is set, which then wins (DVC and `make run` set it so the
budget does not depend on the data length).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gpt_trader.config_base import Section


class EnvConfig(Section):
    """Trading-environment mechanics: observation window, actions, sizing and risk limits."""

    window_size: int = Field(default=16, ge=1)
    # Target exposure (fraction of equity, negative = short) of each discrete action: short / flat / long.
    position_fractions: tuple[float, ...] = (-1.0, 0.0, 1.0)
    max_position: float = Field(default=1.0, gt=0)
    max_gross_leverage: float = Field(default=1.0, gt=0)
    initial_cash_usd: float = Field(default=1_000_000.0, gt=0)
    # Portfolio env: a weight change smaller than this is a hold (no trade, no cost).
    rebalance_threshold: float = Field(default=0.01, ge=0)
    # Per-bar volatility (for square-root impact) is this feature column; its absence is an error.
    sigma_column: str = "rvol_20"

    @model_validator(mode="after")
    def _fractions_valid(self) -> EnvConfig:
        if len(self.position_fractions) < 2:
            raise ValueError(f"position_fractions needs at least two actions, got {self.position_fractions}")
        if len(set(self.position_fractions)) != len(self.position_fractions):
            raise ValueError(f"position_fractions has duplicates: {self.position_fractions}")
        too_big = [f for f in self.position_fractions if abs(f) > self.max_position]
        if too_big:
            raise ValueError(f"position_fractions {too_big} exceed max_position {self.max_position}")
        return self


class RewardConfig(Section):
    """Reward shaping: the base reward and an optional penalty on new drawdown."""

    kind: Literal["log_return", "differential_sharpe"] = "log_return"
    # Log returns of a daily bar are ~1e-2; scaling keeps value targets near unit size for the networks.
    scale: float = Field(default=100.0, gt=0)
    # Differential Sharpe ratio (Moody & Saffell 1998) moving-average rate.
    dsr_eta: float = Field(default=0.01, gt=0, lt=1)
    # Reward -= penalty * (increase in drawdown this step), drawdown as a fraction of peak equity (pre-scale).
    drawdown_penalty: float = Field(default=0.0, ge=0)


class DQNConfig(Section):
    """DQN and its three extensions (each can be switched off to get vanilla SB3 DQN behaviour)."""

    double: bool = True
    dueling: bool = True
    prioritized: bool = True
    buffer_size: int = Field(default=50_000, gt=0)
    learning_starts: int = Field(default=1_000, ge=0)
    batch_size: int = Field(default=64, gt=0)
    train_freq: int = Field(default=4, gt=0)
    gradient_steps: int = Field(default=1, gt=0)
    target_update_interval: int = Field(default=1_000, gt=0)
    exploration_fraction: float = Field(default=0.3, gt=0, le=1)
    exploration_final_eps: float = Field(default=0.05, ge=0, le=1)
    per_alpha: float = Field(default=0.6, ge=0)
    per_beta0: float = Field(default=0.4, ge=0, le=1)
    per_eps: float = Field(default=1e-6, gt=0)
    net_arch: tuple[int, ...] = (64, 64)


class PPOConfig(Section):
    """SB3 PPO settings (n_envs vectorized copies of the training environment)."""

    n_envs: int = Field(default=8, gt=0)
    n_steps: int = Field(default=256, gt=0)
    batch_size: int = Field(default=256, gt=0)
    n_epochs: int = Field(default=4, gt=0)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_range: float = Field(default=0.2, gt=0)
    ent_coef: float = Field(default=0.01, ge=0)
    net_arch: tuple[int, ...] = (64, 64)


class RLEvaluationConfig(Section):
    """Held-out evaluation: chronological split, embargo, seeds, baselines and the gym-anytrading peer."""

    train_frac: float = Field(default=0.7, gt=0, lt=1)
    embargo_bars: int = Field(default=5, ge=0)
    seeds: tuple[int, ...] = (0,)
    random_agent_runs: int = Field(default=5, gt=0)
    peer: bool = False
    peer_symbol: str = "GOOGL"

    @model_validator(mode="after")
    def _seeds_given(self) -> RLEvaluationConfig:
        if not self.seeds:
            raise ValueError("evaluation.seeds must name at least one seed")
        return self


class RLConfig(Section):
    """Deep-RL training hyper-parameters (seed defaults) and the environment/reward/evaluation sections."""

    algorithm: Literal["ppo", "dqn"] = "ppo"
    episodes: int = Field(default=1000, gt=0)
    learning_rate: float = Field(default=3e-4, gt=0)
    gamma: float = Field(default=0.99, gt=0, le=1)
    # Overrides `episodes` when set (timesteps across all vectorized envs).
    total_timesteps: int | None = Field(default=None, gt=0)
    symbol: str = "SPX"
    timeframe: str = "1d"
    torch_threads: int = Field(default=1, gt=0)
    env: EnvConfig = EnvConfig()
    reward: RewardConfig = RewardConfig()
    dqn: DQNConfig = DQNConfig()
    ppo: PPOConfig = PPOConfig()
    evaluation: RLEvaluationConfig = RLEvaluationConfig()

    def timesteps(self, steps_per_episode: int) -> int:
        """SB3 timesteps to train: `total_timesteps` if set, else `episodes` passes over the training window."""
        return self.total_timesteps if self.total_timesteps is not None else self.episodes * steps_per_episode
