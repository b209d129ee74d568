"""Config section for MLflow tracking and the model registry."""

from __future__ import annotations

from pydantic import Field

from gpt_trader.config_base import Section


class PromotionConfig(Section):
    """When a challenger may replace the champion."""

    metric: str = "sharpe"
    higher_is_better: bool = True
    # Absolute improvement over the champion's metric required to promote (e.g. 0.05 Sharpe).
    min_improvement: float = Field(default=0.05, ge=0)
    require_beat_buy_and_hold: bool = True
    baseline_metric: str = "buy_and_hold_sharpe"
    latency_budget_ms: float = Field(default=50.0, gt=0)
    # Champion and challenger are scored on the most recent `window_bars` labelled bars of the challenger's
    # training symbols (one trading year of daily bars); the window must lie after both models' training rows.
    window_bars: int = Field(default=250, ge=10)
    # Bars of history before the window handed to the models, so their first window decisions have full input
    # windows (transformer `max_seq_length`, RL `window_size` plus its simulated position warm-up).
    lookback_bars: int = Field(default=300, ge=0)
    # Live shadow evidence (the challenger and the champion trading private paper books on the same live bars,
    # recorded by the live flow as `shadow.*` version tags). Evidence with fewer bars is reported, not used.
    shadow_min_bars: int = Field(default=20, ge=1)
    # Refuse a challenger without that much live evidence against the current champion.
    require_shadow: bool = False
    # Refuse a challenger whose live return trails the champion's by more than this (fraction, 0.01 = 1 point).
    max_shadow_shortfall: float = Field(default=0.0, ge=0)


class RegistryConfig(Section):
    """Where MLflow keeps runs and models; None means the embedded SQLite store under `paths.mlflow`."""

    # An endpoint, so it may come from GPT_TRADER_REGISTRY__TRACKING_URI (e.g. a PostgreSQL-backed server).
    tracking_uri: str | None = None
    transformer_experiment: str = "gpt-trader-transformer"
    rl_experiment: str = "gpt-trader-rl"
    transformer_model: str = "gpt-trader-transformer"
    rl_ppo_model: str = "gpt-trader-rl-ppo"
    rl_dqn_model: str = "gpt-trader-rl-dqn"
    # Every training (train stages, retrain flow) registers its model as a new version aliased `challenger`.
    register_models: bool = True
    promotion: PromotionConfig = PromotionConfig()
