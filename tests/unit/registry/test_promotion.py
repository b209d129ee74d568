from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gpt_trader.registry.config import PromotionConfig, RegistryConfig
from gpt_trader.registry.promotion import (
    Evidence,
    SanityCheck,
    ServingInput,
    check_model,
    decide_promotion,
    signature_mismatches,
)
from gpt_trader.registry.tracking import setup_experiment
from gpt_trader.trading.shadow import ShadowEvidence

SANE = SanityCheck(loads=True, predicts=True, finite=True, has_signature=True, latency_p99_ms=1.0)
CFG = PromotionConfig(metric="sharpe", min_improvement=0.05, require_beat_buy_and_hold=True)


def ev(version: str, sharpe: float | None, bh: float = 0.2, sanity: SanityCheck = SANE, window: str = "w") -> Evidence:
    metrics = {"buy_and_hold_sharpe": bh}
    if sharpe is not None:
        metrics["sharpe"] = sharpe
    return Evidence(version, sanity, metrics, window)


def test_decide_promotion_first_model_promoted_when_beats_buy_and_hold():
    decision = decide_promotion(ev("1", 0.5), None, CFG)
    assert decision.promote
    assert "no current champion" in decision.reasons


def test_decide_promotion_first_model_rejected_below_buy_and_hold():
    decision = decide_promotion(ev("1", 0.1, bh=0.3), None, CFG)
    assert not decision.promote
    assert any("does not beat buy-and-hold" in r for r in decision.reasons)


def test_decide_promotion_buy_and_hold_not_required_when_disabled():
    cfg = CFG.model_copy(update={"require_beat_buy_and_hold": False})
    assert decide_promotion(ev("1", 0.1, bh=0.3), None, cfg).promote


def test_decide_promotion_better_than_champion_beyond_margin_promoted():
    decision = decide_promotion(ev("2", 0.9), ev("1", 0.5), CFG)
    assert decision.promote
    assert decision.champion_version == "1"
    assert any("beats champion v1" in r for r in decision.reasons)


def test_decide_promotion_worse_than_champion_rejected():
    decision = decide_promotion(ev("2", 0.3), ev("1", 0.5), CFG)
    assert not decision.promote


def test_decide_promotion_within_margin_rejected():
    decision = decide_promotion(ev("2", 0.54), ev("1", 0.5), CFG)
    assert not decision.promote
    assert any("within the 0.05 margin" in r for r in decision.reasons)


def test_decide_promotion_lower_is_better_metric():
    cfg = PromotionConfig(metric="max_drawdown", higher_is_better=False, require_beat_buy_and_hold=False)
    better = Evidence("2", SANE, {"max_drawdown": 0.10}, "w")
    worse = Evidence("1", SANE, {"max_drawdown": 0.30}, "w")
    assert decide_promotion(better, worse, cfg).promote
    assert not decide_promotion(worse, better, cfg).promote


@pytest.mark.parametrize(
    ("sanity", "reason"),
    [
        (SanityCheck(loads=False, error="ImportError: boom"), "does not load: ImportError: boom"),
        (SanityCheck(loads=True, predicts=False, has_signature=True, error="bad input"), "cannot predict"),
        (SanityCheck(loads=True, predicts=True, finite=False, has_signature=True, latency_p99_ms=1), "NaN"),
        (
            SanityCheck(loads=True, predicts=True, finite=True, has_signature=False, latency_p99_ms=1),
            "no model signature",
        ),
        (SanityCheck(loads=True, predicts=True, finite=True, has_signature=True, latency_p99_ms=99.0), "latency"),
    ],
)
def test_decide_promotion_broken_challenger_rejected_even_if_metric_better(sanity, reason):
    decision = decide_promotion(ev("2", 9.0, sanity=sanity), ev("1", 0.5), CFG)
    assert not decision.promote
    assert any(reason in r for r in decision.reasons)


def test_decide_promotion_broken_champion_replaced_by_sane_challenger():
    broken = ev("1", 5.0, sanity=SanityCheck(loads=False, error="gone"))
    decision = decide_promotion(ev("2", 0.5), broken, CFG)
    assert decision.promote
    assert any("unfit" in r for r in decision.reasons)


def test_decide_promotion_missing_metric_or_different_window_rejected():
    assert not decide_promotion(ev("2", None), None, CFG).promote
    assert not decide_promotion(ev("2", math.nan), None, CFG).promote
    decision = decide_promotion(ev("2", 0.9, window="2018"), ev("1", 0.5, window="2017"), CFG)
    assert not decision.promote
    assert "different windows" in decision.reasons[0]


def live(champion: str | None, bars: int, mine: float, theirs: float) -> ShadowEvidence:
    start = datetime(2018, 6, 1, tzinfo=UTC)
    return ShadowEvidence(champion, bars, start, start + timedelta(days=bars), mine, theirs)


def test_decide_promotion_live_shadow_trailing_the_champion_blocks_an_offline_winner():
    decision = decide_promotion(ev("2", 0.9), ev("1", 0.5), CFG, live("1", 40, -0.03, 0.01))
    assert not decision.promote
    assert any("live shadow over 40 bars" in r and "trails" in r for r in decision.reasons)


def test_decide_promotion_live_shadow_within_the_allowed_shortfall_promotes():
    cfg = CFG.model_copy(update={"max_shadow_shortfall": 0.05})
    decision = decide_promotion(ev("2", 0.9), ev("1", 0.5), cfg, live("1", 40, -0.03, 0.01))
    assert decision.promote
    assert any("challenger -3.00% vs champion v1 +1.00%" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("evidence", "why"),
    [(live("1", 5, -0.5, 0.5), "5 bars against v1"), (live("7", 400, -0.5, 0.5), "400 bars against v7")],
    ids=["too-few-bars", "other-champion"],
)
def test_decide_promotion_live_shadow_too_short_or_against_another_champion_is_not_used(evidence, why):
    decision = decide_promotion(ev("2", 0.9), ev("1", 0.5), CFG, evidence)
    assert decision.promote
    assert any("not used" in r and why in r for r in decision.reasons)


def test_decide_promotion_require_shadow_refuses_without_live_evidence():
    cfg = CFG.model_copy(update={"require_shadow": True})
    assert not decide_promotion(ev("2", 0.9), ev("1", 0.5), cfg).promote
    assert decide_promotion(ev("2", 0.9), ev("1", 0.5), cfg, live("1", 20, 0.02, 0.01)).promote


def test_decide_promotion_live_evidence_never_rescues_an_unfit_challenger():
    broken = SanityCheck(loads=False, error="boom")
    decision = decide_promotion(ev("2", 0.9, sanity=broken), ev("1", 0.5), CFG, live("1", 400, 0.5, 0.0))
    assert not decision.promote


def test_decision_as_tags_strings():
    tags = decide_promotion(ev("2", 0.9), ev("1", 0.5), CFG).as_tags()
    assert tags["promotion.decision"] == "promoted"
    assert tags["promotion.against"] == "1"
    assert all(isinstance(v, str) for v in tags.values())


def test_decide_promotion_signature_mismatch_rejects_a_better_challenger_with_its_reason():
    why = "input signature does not match champion v1's input signature: columns missing there: ['sentiment']"
    sanity = SanityCheck(True, True, True, has_signature=True, signature_mismatch=why, latency_p99_ms=1.0)
    decision = decide_promotion(ev("2", 9.0, sanity=sanity), ev("1", 0.5), CFG)
    assert not decision.promote
    assert decision.reasons == (f"challenger {why}",)


def schema(*columns: tuple[str, str] | tuple[str, str, bool]):
    from mlflow.types import ColSpec, DataType, Schema

    return Schema([ColSpec(DataType[c[1]], c[0], required=c[2] if len(c) == 3 else True) for c in columns])


SERVED = schema(("ts", "datetime"), ("symbol", "string"), ("close", "double"), ("day_of_week", "integer"))


def test_signature_mismatches_same_columns_subset_and_safe_upcasts_accepted():
    assert signature_mismatches(SERVED, SERVED) == []
    # Fewer columns, int -> long and int -> double upcasts (MLflow converts them), optional extras: all accepted.
    fewer = schema(("close", "double"), ("day_of_week", "long"), ("volume_z", "double", False))
    assert signature_mismatches(fewer, SERVED) == []
    assert signature_mismatches(schema(("day_of_week", "double")), SERVED) == []


def test_signature_mismatches_missing_column_and_incompatible_types_named():
    wanted = schema(("close", "string"), ("sentiment", "double"), ("day_of_week", "integer"), ("ts", "long"))
    assert signature_mismatches(wanted, SERVED) == [
        "columns missing there: ['sentiment']",
        "'close' is double there but the model wants string",
        "'ts' is datetime there but the model wants long",
    ]
    # Narrowing is not safe: a long column served where the model wants a 32-bit integer.
    assert signature_mismatches(schema(("x", "integer")), schema(("x", "long"))) == [
        "'x' is long there but the model wants integer"
    ]


def test_signature_mismatches_tensor_signature_against_columns():
    from mlflow.types import Schema, TensorSpec

    tensor = Schema([TensorSpec(np.dtype("float32"), (-1, 4))])
    assert signature_mismatches(tensor, SERVED) == ["the model takes tensors, the serving input does not"]
    assert signature_mismatches(SERVED, tensor) == ["the model takes named columns, the serving input does not"]
    assert signature_mismatches(tensor, tensor) == []


def _log_pyfunc(tmp_path, value: float, with_signature: bool = True, x: pd.DataFrame | None = None) -> str:
    import mlflow
    from mlflow.models import infer_signature

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, v: float) -> None:
            self.v = v

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"position": np.full(len(model_input), self.v)})

    setup_experiment("t", RegistryConfig(), tmp_path / "mlflow")
    x = pd.DataFrame({"ret_1": [0.01, -0.02]}) if x is None else x
    sig = infer_signature(x, pd.DataFrame({"position": [0.0, 0.0]})) if with_signature else None
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="m", python_model=Constant(value), signature=sig, input_example=x)
    return info.model_uri


@pytest.mark.slow
def test_check_model_real_pyfunc_sane_and_nan_detected(tmp_path):
    good = check_model(_log_pyfunc(tmp_path, 0.5), n_timings=5)
    assert good.failures(latency_budget_ms=1000) == []
    nan = check_model(_log_pyfunc(tmp_path, math.nan), n_timings=5)
    assert nan.failures(1000) == ["predictions contain NaN or infinite values"]
    missing = check_model("models:/does-not-exist/1", n_timings=1)
    assert not missing.loads


@pytest.mark.slow
def test_check_model_crafted_signature_mismatch_fails_sanity_with_reason(tmp_path):
    served = ServingInput(schema(("ret_1", "double"), ("rsi", "double")), "champion v4's input signature")
    good = check_model(_log_pyfunc(tmp_path, 0.5), n_timings=2, serving_input=served)
    assert good.failures(1000) == []
    # Predicts fine on its own example, but wants a column the serving side never sends, and `ret_1` as text.
    crafted = pd.DataFrame({"ret_1": ["0.01", "-0.02"], "sentiment": [0.3, 0.1]})
    bad = check_model(_log_pyfunc(tmp_path, 0.5, x=crafted), n_timings=2, serving_input=served)
    assert bad.predicts
    assert bad.finite
    assert bad.failures(1000) == [
        "input signature does not match champion v4's input signature: columns missing there: ['sentiment']; "
        "'ret_1' is double there but the model wants string"
    ]
