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
        probs = (self.p_sell, self.p_hold, self.p_buy)
        if any(not 0.0 <= p <= 1.0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"{self.model_id}: probabilities must be in [0, 1] and sum to 1, got {probs}")


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
    probs = {-1: output.p_sell, 0: output.p_hold, 1: output.p_buy}
    direction = max(probs, key=lambda k: (probs[k], k == 0))  # ties resolve to Hold: no trade on a coin flip
    confidence = probs[direction]
    if direction == 0 or confidence < config.min_transformer_confidence:
        return ModelView(0.0, confidence)
    # An expected return that disagrees in sign, or is too small to pay costs, vetoes the class call.
    if output.expected_return * direction < config.min_expected_return_bps * BPS:
        return ModelView(0.0, confidence)
    return ModelView(float(direction) * config.max_abs_target, confidence)


def rl_view(output: RLOutput, config: SignalConfig) -> ModelView:
    """The RL agent's target, clipped to `max_abs_target`, if confident enough."""
    if output.confidence < config.min_rl_confidence:
        return ModelView(0.0, output.confidence)
    target = max(-config.max_abs_target, min(config.max_abs_target, output.target))
    return ModelView(target, output.confidence)


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
    t_view = transformer_view(transformer, config) if transformer is not None else None
    r_view = rl_view(rl, config) if rl is not None else None
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
    return Signal(symbol, ts, view.target, min(1.0, max(0.0, view.confidence)), sources)


def _agree(t: ModelView | None, r: ModelView | None) -> ModelView | None:
    if t is None or r is None:
        return None
    confidence = min(t.confidence, r.confidence)
    if _sign(t.target) == 0 or _sign(t.target) != _sign(r.target):
        return ModelView(0.0, confidence)
    target = t.target if abs(t.target) <= abs(r.target) else r.target
    return ModelView(target, confidence)


def _blend(t: ModelView | None, r: ModelView | None, config: SignalConfig) -> ModelView | None:
    parts = [(v, w) for v, w in ((t, config.transformer_weight), (r, config.rl_weight)) if v is not None and w > 0]
    if not parts:
        return None
    total = sum(w for _, w in parts)
    target = sum(v.target * w for v, w in parts) / total
    confidence = sum(v.confidence * w for v, w in parts) / total
    return ModelView(max(-1.0, min(1.0, target)), confidence)
