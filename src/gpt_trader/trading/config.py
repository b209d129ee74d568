"""Config section for trading costs (shared by the RL environment, the backtest and the paper broker)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpt_trader.config_base import Section


class CostConfig(Section):
    """Transaction costs, in basis points of traded notional unless named otherwise."""

    commission_bps: float = Field(default=1.0, ge=0)
    # Full quoted spread; crossing it costs half on each trade.
    spread_bps: float = Field(default=2.0, ge=0)
    slippage_bps: float = Field(default=0.5, ge=0)
    # Square-root market impact: impact_coef * sigma_per_bar * sqrt(participation), participation = qty / bar volume.
    impact_coef: float = Field(default=0.1, ge=0)


class SignalConfig(Section):
    """How transformer and RL outputs combine into one target position per symbol and bar."""

    # transformer | rl: one model decides; agreement: trade only when both point the same way; weighted: blend.
    policy: Literal["transformer", "rl", "agreement", "weighted"] = "agreement"
    transformer_weight: float = Field(default=0.5, ge=0)
    rl_weight: float = Field(default=0.5, ge=0)
    # Below these a model's view counts as "no view" (target 0), so noise does not trade.
    min_transformer_confidence: float = Field(default=0.5, ge=0, le=1)
    min_rl_confidence: float = Field(default=0.0, ge=0, le=1)
    min_expected_return_bps: float = Field(default=0.0, ge=0)
    # Target position for each discrete RL action index (the seed's agents use Sell/Hold/Buy = 0/1/2).
    rl_action_targets: tuple[float, ...] = (-1.0, 0.0, 1.0)
    # Largest |target| a signal may carry; 1.0 is fully invested, long or short.
    max_abs_target: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _weights_positive(self) -> SignalConfig:
        if self.policy == "weighted" and self.transformer_weight + self.rl_weight <= 0:
            raise ValueError("weighted policy needs transformer_weight + rl_weight > 0")
        if any(abs(t) > 1 for t in self.rl_action_targets):
            raise ValueError(f"rl_action_targets must lie in [-1, 1], got {self.rl_action_targets}")
        return self


class SizingConfig(Section):
    """Turning a target fraction of equity into an order quantity."""

    # Quantities are multiples of this; 1 for whole shares, 1e-9 for Alpaca fractional orders.
    lot_size: float = Field(default=1.0, gt=0)
    # Orders smaller than this are not worth their fixed costs and are skipped.
    min_order_notional_usd: float = Field(default=1.0, ge=0)


class RiskConfig(Section):
    """Pre-trade limits and the kill-switch; fractions are of current equity."""

    max_position_fraction: float = Field(default=0.5, gt=0)
    max_gross_exposure: float = Field(default=1.0, gt=0)
    max_order_notional_usd: float = Field(default=50_000.0, gt=0)
    # Per-trade risk: the loss if the price moves `stop_loss_fraction` against the new exposure.
    stop_loss_fraction: float = Field(default=0.02, gt=0, le=1)
    max_loss_per_trade_fraction: float = Field(default=0.01, gt=0, le=1)
    # Kill-switch: breaching either flattens every position and halts trading until reset by a person.
    daily_loss_limit_fraction: float = Field(default=0.03, gt=0, le=1)
    max_drawdown_fraction: float = Field(default=0.10, gt=0, le=1)
    max_orders_per_window: int = Field(default=20, ge=1)
    order_window_secs: float = Field(default=60.0, gt=0)
    # A symbol's data is stale (no new exposure; a held position goes flat, see `LiveConfig.stale_action`) when its
    # feed is reported down, or when its last bar is older than `max_bar_age_secs` of bar time *and* it missed more
    # than `max_missed_bars` of the bar times other symbols reached: a symbol one bar late is ordinary batching
    # lag, and a weekend between daily bars is one bar however many seconds it spans.
    max_bar_age_secs: float = Field(default=180.0, gt=0)
    max_missed_bars: int = Field(default=1, ge=0)


class ExecutionConfig(Section):
    """Which broker runs the orders and how it is reached (keys come from APCA_API_* variables only)."""

    broker: Literal["paper", "alpaca"] = "paper"
    strategy_id: str = Field(default="default", min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.-]+$")
    alpaca_base_url: str = "https://paper-api.alpaca.markets"
    time_in_force: Literal["day", "gtc", "ioc", "fok"] = "day"
    timeout_secs: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_base_secs: float = Field(default=0.5, ge=0)
    backoff_max_secs: float = Field(default=8.0, ge=0)
    initial_cash_usd: float = Field(default=100_000.0, gt=0)


class StateConfig(Section):
    """Where the trading state lives: a SQLite file locally, a PostgreSQL URL in production."""

    url: str = "sqlite:///data/trading/state.db"


# What a market condition lets through (`TradingState` by name): everything, risk-reducing orders only, nothing.
ConditionState = Literal["ACTIVE", "REDUCING", "HALTED"]
_DEFAULT_CONDITION_STATES: dict[str, ConditionState] = {"EXTREME": "REDUCING"}


class LiveConfig(Section):
    """The live session: model freshness, registry polling and what the feature window keeps."""

    # How often the registry is asked whether the champion (or challenger) moved.
    registry_poll_secs: float = Field(default=30.0, gt=0)
    # A champion registered longer ago than this is expired: its symbols go flat and an alert fires.
    max_model_age_hours: float | None = Field(default=None, gt=0)
    # Bars of features kept per symbol for the models' input windows.
    window_bars: int = Field(default=128, ge=16)
    # Run the challenger beside the champion on the same bars; its orders are recorded, never sent.
    shadow_challenger: bool = True
    # The symbol whose bars feed the market-condition classifier (None: the first symbol seen).
    market_symbol: str | None = None
    # Decisions are taken once per bar timestamp for all symbols: how long to wait for the other symbols' bars
    # of a timestamp before deciding without them (a symbol with no trades in a window has no bar).
    batch_wait_secs: float = Field(default=1.0, ge=0)
    # torch threads for model inference. More than 1 measured slower in the live process here (2 cores): the
    # OpenMP workers spin between forward passes and take the core the Python side (ingestion, features,
    # orders) needs; raise it on machines with cores to spare.
    inference_threads: int = Field(default=1, ge=1)
    # Serve a single-asset model on other symbols: live symbol -> the model asset it is scored as.
    model_symbol_map: dict[str, str] = Field(default_factory=dict)
    # Trading state each market condition (gpt_trader.scaling's QUIET..EXTREME) sets; unlisted ones are ACTIVE.
    # A condition-set state lifts when the condition changes; a kill-switch halt stays until a person resets it.
    condition_states: dict[str, ConditionState] = Field(default_factory=lambda: dict(_DEFAULT_CONDITION_STATES))
    # A held symbol whose data went stale (bars stopped, or its feed reported down): "flat" closes the position
    # with a risk-reducing order, "hold" keeps it; either way an alert fires and new exposure is refused.
    stale_action: Literal["flat", "hold"] = "flat"
    # Which registered RL policy serves as the RL champion (registry.rl_ppo_model or registry.rl_dqn_model).
    rl_model: Literal["ppo", "dqn"] = "ppo"

    @field_validator("condition_states")
    @classmethod
    def _known_conditions(cls, value: dict[str, ConditionState]) -> dict[str, ConditionState]:
        # Imported here: the scaling package is not needed to read a config (and its condition ladder is the truth).
        from gpt_trader.scaling.conditions import MarketCondition

        names = set(MarketCondition.__members__)
        out = {key.upper(): state for key, state in value.items()}
        unknown = sorted(k for k in value if k.upper() not in names)
        if unknown:
            raise ValueError(f"condition_states: unknown market condition(s) {unknown}; expected {sorted(names)}")
        if len(out) != len(value):
            raise ValueError(f"condition_states names a condition twice (case-insensitively): {sorted(value)}")
        return out


class TradingConfig(Section):
    """Live/paper trading: signals, risk limits, execution and state (costs are the top-level `costs` section)."""

    live: LiveConfig = LiveConfig()

    signals: SignalConfig = SignalConfig()
    sizing: SizingConfig = SizingConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    state: StateConfig = StateConfig()
