from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the combination's arithmetic, pinned against its plain definition ----------------------------------------
def _reference(tf: TransformerOutput | None, rl: RLOutput | None, cfg: SignalConfig) -> tuple[float, float]:
    """The policies written out plainly (the definition `combine_signals` was first written as)."""

    def t_view(o: TransformerOutput) -> tuple[float, float]:
        probs = {-1: o.p_sell, 0: o.p_hold, 1: o.p_buy}
        direction = max(probs, key=lambda k: (probs[k], k == 0))
        confidence = probs[direction]
        if direction == 0 or confidence < cfg.min_transformer_confidence:
            return 0.0, confidence
        if o.expected_return * direction < cfg.min_expected_return_bps * 1e-4:
            return 0.0, confidence
        return float(direction) * cfg.max_abs_target, confidence

    def r_view(o: RLOutput) -> tuple[float, float]:
        if o.confidence < cfg.min_rl_confidence:
            return 0.0, o.confidence
        return max(-cfg.max_abs_target, min(cfg.max_abs_target, o.target)), o.confidence

    t = t_view(tf) if tf is not None else None
    r = r_view(rl) if rl is not None else None
    view: tuple[float, float] | None
    if cfg.policy == "transformer":
        view = t
    elif cfg.policy == "rl":
        view = r
    elif cfg.policy == "agreement":
        if t is None or r is None:
            view = None
        else:
            sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
            conf = min(t[1], r[1])
            if sign(t[0]) == 0 or sign(t[0]) != sign(r[0]):
                view = (0.0, conf)
            else:
                view = (t[0] if abs(t[0]) <= abs(r[0]) else r[0], conf)
    else:
        parts = [(v, w) for v, w in ((t, cfg.transformer_weight), (r, cfg.rl_weight)) if v is not None and w > 0]
        if not parts:
            view = None
        else:
            total = sum(w for _, w in parts)
            target = sum(v[0] * w for v, w in parts) / total
            view = (max(-1.0, min(1.0, target)), sum(v[1] * w for v, w in parts) / total)
    if view is None:
        return 0.0, 0.0
    return view[0], min(1.0, max(0.0, view[1]))


_prob = st.floats(0.0, 1.0)


@st.composite
def _transformer_outputs(draw: st.DrawFn) -> TransformerOutput | None:
    if draw(st.booleans()):
        return None
    # Ties between classes matter (Hold wins ties, Sell beats Buy on a tie): draw them on purpose.
    a = draw(st.sampled_from([0.0, 0.25, 1 / 3, 0.4, 0.5]) | _prob)
    b = draw(st.sampled_from([a, 0.0, 0.25]) | st.floats(0.0, 1.0 - a))
    b = min(b, 1.0 - a)
    c = 1.0 - a - b
    order = draw(st.permutations([a, b, c]))
    ret = draw(st.floats(-0.01, 0.01) | st.just(0.0))
    return TransformerOutput(*order, expected_return=ret, model_id="tf")


@given(
    tf=_transformer_outputs(),
    rl=st.none() | st.builds(RLOutput, st.floats(-1.0, 1.0), _prob, st.just("rl")),
    policy=st.sampled_from(["transformer", "rl", "agreement", "weighted"]),
    w_t=st.sampled_from([0.0, 0.3, 0.5, 1.0, 2.5]),
    w_r=st.sampled_from([0.0, 0.5, 0.7, 1.0]),
    min_t=st.sampled_from([0.0, 0.4, 0.5, 0.7]),
    min_r=st.sampled_from([0.0, 0.5, 0.9]),
    min_bps=st.sampled_from([0.0, 5.0]),
    max_abs=st.sampled_from([1.0, 0.5, 0.25]),
)
@settings(max_examples=400, deadline=None)
def test_combine_signals_equals_the_plain_definition(
    tf: TransformerOutput | None,
    rl: RLOutput | None,
    policy: str,
    w_t: float,
    w_r: float,
    min_t: float,
    min_r: float,
    min_bps: float,
    max_abs: float,
) -> None:
    if policy == "weighted" and w_t + w_r <= 0:
        w_t = 1.0
    cfg = SignalConfig(
        policy=policy,  # type: ignore[arg-type]
        transformer_weight=w_t,
        rl_weight=w_r,
        min_transformer_confidence=min_t,
        min_rl_confidence=min_r,
        min_expected_return_bps=min_bps,
        max_abs_target=max_abs,
    )
    signal = combine_signals("AAPL", TS, tf, rl, cfg)
    assert (signal.target, signal.confidence) == _reference(tf, rl, cfg)  # bit for bit
