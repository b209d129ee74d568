"""Combine transformer and RL outputs into one `Signal` per symbol and bar, by a configurable policy.

Pure functions: the live flow calls `combine_signals` with whatever the models produced this bar.
Policies: `transformer` or `rl` alone; `agreement` trades only when both point the same way (at the smaller of
the two sizes, the conservative choice); `weighted` blends the two targets by their weights. A model whose
confidence is below its threshold contributes "no view" (target 0) rather than a weak trade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gpt_trader.trading.config import SignalConfig
from gpt_trader.trading.types import Signal

BPS = 1e-4


@dataclass(frozen=True, slots=True)
class TransformerOutput:
    """One transformer prediction: Sell/Hold/Buy probabilities and the expected next return (simple, fraction)."""

    p_sell: float
    p_hold: float
    p_buy: float
    expected_return: float = 0.0
    model_id: str = "transformer"

    def __post_init__(self) -> None:
        a, b, c = self.p_sell, self.p_hold, self.p_buy
        # Spelled out (no generator): built for every symbol at every bar.
        if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 and 0.0 <= c <= 1.0) or abs(a + b + c - 1.0) > 1e-6:
            raise ValueError(f"{self.model_id}: probabilities must be in [0, 1] and sum to 1, got {(a, b, c)}")


@dataclass(frozen=True, slots=True)
class RLOutput:
    """One RL decision already mapped to a target position in [-1, 1], with the agent's confidence."""

    target: float
    confidence: float = 1.0
    model_id: str = "rl"

    def __post_init__(self) -> None:
        if not -1.0 <= self.target <= 1.0 or not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"{self.model_id}: target must be in [-1, 1], confidence in [0, 1]: {self}")


@dataclass(frozen=True, slots=True)
class ModelView:
    """A model's target and confidence after its thresholds (target 0 means no view)."""

    target: float
    confidence: float


def rl_output_from_action(
    action: int, action_targets: Sequence[float], *, confidence: float = 1.0, model_id: str = "rl"
) -> RLOutput:
    """Map a discrete RL action index to its configured target position."""
    if not 0 <= action < len(action_targets):
        raise ValueError(f"{model_id}: action {action} outside the {len(action_targets)} configured actions")
    return RLOutput(float(action_targets[action]), confidence, model_id)


def transformer_view(output: TransformerOutput, config: SignalConfig) -> ModelView:
    """The transformer's call: the most probable class, if confident enough and the expected move big enough."""
    return ModelView(*_transformer_call(output, config))


def _transformer_call(output: TransformerOutput, config: SignalConfig) -> tuple[float, float]:
    # (target, confidence) without a `ModelView`: this runs for every symbol at every bar.
    p_sell, p_hold, p_buy = output.p_sell, output.p_hold, output.p_buy
    # The most probable class; ties resolve to Hold (no trade on a coin flip), a Sell/Buy tie to Sell.
    if p_hold >= p_sell and p_hold >= p_buy:
        return 0.0, p_hold
    direction, confidence = (1, p_buy) if p_buy > p_sell else (-1, p_sell)
    if confidence < config.min_transformer_confidence:
        return 0.0, confidence
    # An expected return that disagrees in sign, or is too small to pay costs, vetoes the class call.
    if output.expected_return * direction < config.min_expected_return_bps * BPS:
        return 0.0, confidence
    return float(direction) * config.max_abs_target, confidence


def rl_view(output: RLOutput, config: SignalConfig) -> ModelView:
    """The RL agent's target, clipped to `max_abs_target`, if confident enough."""
    return ModelView(*_rl_call(output, config))


def _rl_call(output: RLOutput, config: SignalConfig) -> tuple[float, float]:
    if output.confidence < config.min_rl_confidence:
        return 0.0, output.confidence
    return max(-config.max_abs_target, min(config.max_abs_target, output.target)), output.confidence


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def combine_signals(
    symbol: str,
    ts: datetime,
    transformer: TransformerOutput | None,
    rl: RLOutput | None,
    config: SignalConfig,
) -> Signal:
    """One target position from the models' outputs under `config.policy`; a missing needed output means flat."""
    t_view = _transformer_call(transformer, config) if transformer is not None else None
    r_view = _rl_call(rl, config) if rl is not None else None
    t_id: tuple[str, ...] = (transformer.model_id,) if transformer is not None else ()
    r_id: tuple[str, ...] = (rl.model_id,) if rl is not None else ()
    policy = config.policy
    if policy == "transformer":
        view, sources = t_view, t_id
    elif policy == "rl":
        view, sources = r_view, r_id
    elif policy == "agreement":
        view, sources = _agree(t_view, r_view), t_id + r_id
    else:
        view, sources = _blend(t_view, r_view, config), t_id + r_id
    if view is None:
        return Signal(symbol, ts, 0.0, 0.0, sources)
    return Signal(symbol, ts, view[0], min(1.0, max(0.0, view[1])), sources)


# Views below are (target, confidence) pairs.
def _agree(t: tuple[float, float] | None, r: tuple[float, float] | None) -> tuple[float, float] | None:
    if t is None or r is None:
        return None
    confidence = min(t[1], r[1])
    if _sign(t[0]) == 0 or _sign(t[0]) != _sign(r[0]):
        return 0.0, confidence
    return (t[0] if abs(t[0]) <= abs(r[0]) else r[0]), confidence


def _blend(
    t: tuple[float, float] | None, r: tuple[float, float] | None, config: SignalConfig
) -> tuple[float, float] | None:
    w_t, w_r = config.transformer_weight, config.rl_weight
    # Sums start from 0, in the parts' order, as `sum` over the parts would: bit-identical floats.
    if t is not None and w_t > 0:
        if r is not None and w_r > 0:
            total = 0 + w_t + w_r
            return max(-1.0, min(1.0, (0 + t[0] * w_t + r[0] * w_r) / total)), (0 + t[1] * w_t + r[1] * w_r) / total
        view, w = t, w_t
    elif r is not None and w_r > 0:
        view, w = r, w_r
    else:
        return None
    return max(-1.0, min(1.0, (0 + view[0] * w) / (0 + w))), (0 + view[1] * w) / (0 + w)
