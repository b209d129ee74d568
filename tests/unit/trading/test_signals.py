from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpt_trader.trading.config import SignalConfig
from gpt_trader.trading.signals import RLOutput, TransformerOutput, combine_signals, rl_output_from_action

TS = datetime(2024, 1, 2, tzinfo=UTC)
BUY = TransformerOutput(p_sell=0.1, p_hold=0.2, p_buy=0.7, expected_return=0.002, model_id="tf@3")
SELL = TransformerOutput(p_sell=0.8, p_hold=0.1, p_buy=0.1, expected_return=-0.003, model_id="tf@3")
LONG = RLOutput(target=0.6, confidence=0.9, model_id="dqn@7")
SHORT = RLOutput(target=-1.0, confidence=0.9, model_id="dqn@7")


def combine(policy: str, tf: TransformerOutput | None, rl: RLOutput | None, **kw: float) -> float:
    return combine_signals("AAPL", TS, tf, rl, SignalConfig(policy=policy, **kw)).target  # type: ignore[arg-type]


def test_combine_transformer_only_follows_argmax_class():
    assert combine("transformer", BUY, SHORT) == 1.0
    assert combine("transformer", SELL, LONG) == -1.0


def test_combine_transformer_below_confidence_threshold_is_flat():
    assert combine("transformer", BUY, None, min_transformer_confidence=0.75) == 0.0


def test_combine_transformer_expected_return_disagreeing_vetoes_trade():
    tf = TransformerOutput(0.1, 0.2, 0.7, expected_return=-0.001)
    assert combine("transformer", tf, None) == 0.0
    assert combine("transformer", BUY, None, min_expected_return_bps=30) == 0.0  # 20 bps expected < 30 bps


def test_combine_rl_only_uses_rl_target_clipped():
    assert combine("rl", SELL, LONG) == pytest.approx(0.6)
    assert combine("rl", None, SHORT, max_abs_target=0.5) == -0.5


def test_combine_rl_below_confidence_is_flat():
    assert combine("rl", None, RLOutput(0.6, confidence=0.3), min_rl_confidence=0.5) == 0.0


def test_combine_agreement_trades_smaller_size_when_both_agree():
    signal = combine_signals("AAPL", TS, BUY, LONG, SignalConfig(policy="agreement"))
    assert signal.target == pytest.approx(0.6)
    assert signal.sources == ("tf@3", "dqn@7")
    assert signal.confidence == pytest.approx(0.7)


def test_combine_agreement_disagreeing_models_are_flat():
    assert combine("agreement", BUY, SHORT) == 0.0
    assert combine("agreement", BUY, None) == 0.0


def test_combine_weighted_blends_targets_by_weight():
    assert combine("weighted", BUY, SHORT, transformer_weight=3, rl_weight=1) == pytest.approx(0.5)
    assert combine("weighted", BUY, None, transformer_weight=3, rl_weight=1) == pytest.approx(1.0)


def test_combine_no_outputs_is_flat_with_zero_confidence():
    signal = combine_signals("AAPL", TS, None, None, SignalConfig(policy="weighted"))
    assert (signal.target, signal.confidence) == (0.0, 0.0)


def test_rl_output_from_action_maps_index_and_rejects_unknown():
    assert rl_output_from_action(2, (-1.0, 0.0, 1.0)).target == 1.0
    with pytest.raises(ValueError, match="action 3"):
        rl_output_from_action(3, (-1.0, 0.0, 1.0))


def test_transformer_output_bad_probabilities_raise():
    with pytest.raises(ValueError, match="sum to 1"):
        TransformerOutput(0.5, 0.5, 0.5)
