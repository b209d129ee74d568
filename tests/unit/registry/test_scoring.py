"""Scoring registered models on the promotion window, and the gate's refusal to score in-sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from gpt_trader.data.config import DataConfig, DatasetSpec
from gpt_trader.data.store import dataset_path
from gpt_trader.registry.config import PromotionConfig, RegistryConfig
from gpt_trader.registry.promotion import decide_promotion
from gpt_trader.registry.scoring import ScoringWindow, promotion_window, score_version, window_overlap
from gpt_trader.registry.tracking import setup_experiment
from gpt_trader.settings import PathsConfig, Settings
from gpt_trader.trading.costs import CostModel

N = 120


class ConstantPosition(mlflow.pyfunc.PythonModel):
    """Holds one position on every bar (NaN for a broken model), through the common interface."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input, params=None):
        return pd.DataFrame(
            {
                "ts": model_input["ts"],
                "symbol": model_input["symbol"],
                "position": np.full(len(model_input), self.value),
            }
        )


def features(n: int = N, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.0005 + 0.01 * rng.standard_normal(n)))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(days=i) for i in range(n)],
            "symbol": ["AAA"] * n,
            "close": close,
            "ret_1": np.r_[0.0, np.diff(np.log(close))],
        }
    )


def log_constant(value: float, frame: pl.DataFrame) -> str:
    from mlflow.models import infer_signature

    example = frame.tail(5).with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas()
    model = ConstantPosition(value)
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(
            name="m",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            input_example=example,
        ).model_uri


@pytest.fixture
def store(tmp_path):
    setup_experiment("scoring-test", RegistryConfig(), tmp_path / "mlflow")
    return tmp_path


def test_promotion_window_is_latest_bars_with_a_realized_next_return():
    frame = features()
    window = promotion_window(frame, ("AAA",), 50)
    assert window.n_bars == 50
    assert window.end == frame["ts"][-2]  # the last bar has no next close yet
    assert window.start == frame["ts"][N - 51]


def test_score_constant_long_is_exactly_buy_and_hold_minus_entry_cost(store):
    frame = features()
    window = promotion_window(frame, ("AAA",), 50)
    cost = CostModel()
    evidence = score_version(log_constant(1.0, frame), frame, window, cost, version="1", lookback_bars=10)
    assert not evidence.sanity.failures(1e9)
    m = evidence.metrics
    assert m["sharpe"] == m["buy_and_hold_sharpe"]
    assert m["total_return"] == m["buy_and_hold_total_return"]
    close = frame["close"].to_numpy()
    raw = close[N - 50 : N] / close[N - 51 : N - 1] - 1
    net = raw.copy()
    net[0] -= float(cost.rebalance_cost(1.0))  # entering the position once, then holding
    assert m["total_return"] == pytest.approx(np.prod(1 + net) - 1, rel=1e-12)
    assert m["total_return"] < np.prod(1 + raw) - 1
    flat = score_version(log_constant(0.0, frame), frame, window, cost, version="2", lookback_bars=10)
    assert flat.metrics["total_return"] == 0.0


def test_score_nan_model_fails_sanity_and_is_never_promoted(store):
    frame = features()
    window = promotion_window(frame, ("AAA",), 50)
    evidence = score_version(log_constant(float("nan"), frame), frame, window, CostModel(), version="3")
    assert "predictions contain NaN or infinite values" in evidence.sanity.failures(1e9)
    assert "sharpe" not in evidence.metrics
    assert any("non-finite" in n for n in evidence.notes)
    decision = decide_promotion(evidence, None, PromotionConfig(require_beat_buy_and_hold=False))
    assert not decision.promote


def test_window_overlap_refuses_a_model_fitted_on_window_rows():
    start = datetime(2024, 3, 1, tzinfo=UTC)
    window = ScoringWindow(("AAA",), start, start + timedelta(days=49), 50)
    assert window_overlap(window, {"training.heldout_start_ts": "2024-02-01T00:00:00+00:00"}, "m") is None
    late = window_overlap(window, {"training.heldout_start_ts": "2024-03-10T00:00:00+00:00"}, "champion v1")
    assert late is not None
    assert "champion v1" in late
    assert "in-sample" in late
    assert window_overlap(window, {"training.last_ts": "2024-03-01T00:00:00+00:00"}, "m") is not None
    assert "no recorded training range" in (window_overlap(window, {}, "m") or "")


def _settings(tmp_path, **promotion) -> Settings:
    spec = DatasetSpec(source="simulated", symbol="AAA", timeframe="1d")
    path = dataset_path(tmp_path / "data", "features", spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    features().write_parquet(path)
    cfg = {"window_bars": 50, "lookback_bars": 10, "latency_budget_ms": 1e6, **promotion}
    return Settings(
        paths=PathsConfig(data=str(tmp_path / "data"), mlflow=str(tmp_path / "mlflow")),
        data=DataConfig(datasets=[spec]),
        registry=RegistryConfig(promotion=PromotionConfig(**cfg)),
    )


def _register(client, name: str, value: float, heldout: str, frame: pl.DataFrame | None = None) -> str:
    from gpt_trader.registry.models import register_challenger

    tags = {"training.symbols": "AAA", "training.timeframe": "1d", "training.heldout_start_ts": heldout}
    return register_challenger(client, name, log_constant(value, features() if frame is None else frame), tags)


def test_promote_model_refuses_when_window_overlaps_champion_training_champion_untouched(store):
    from gpt_trader.registry.lifecycle import promote_model, registry_client
    from gpt_trader.registry.models import promote

    settings = _settings(store, require_beat_buy_and_hold=False)
    client = registry_client(settings)
    name = settings.registry.transformer_model
    # The champion claims training rows up to the very end of the data (e.g. data revised after it was trained).
    promote(client, name, _register(client, name, 1.0, "2024-04-25T00:00:00+00:00"), reason="seed")
    challenger = _register(client, name, 1.0, "2024-01-15T00:00:00+00:00")
    report = promote_model(settings, "transformer")
    assert not report.decision.promote
    assert "champion v1" in report.decision.reasons[0]
    assert client.get_registered_model(name).aliases == {"champion": 1, "challenger": 2}
    tags = client.get_model_version(name, challenger).tags
    assert tags["promotion.decision"] == "rejected"
    assert "in-sample" in tags["promotion.reasons"]


def test_promote_model_constant_long_does_not_beat_buy_and_hold_when_required(store):
    from gpt_trader.registry.lifecycle import promote_model, registry_client

    settings = _settings(store)  # default: require_beat_buy_and_hold=True
    client = registry_client(settings)
    name = settings.registry.rl_ppo_model
    _register(client, name, 1.0, "2024-01-15T00:00:00+00:00")
    report = promote_model(settings, "ppo")
    assert not report.decision.promote
    assert any("does not beat buy-and-hold" in r for r in report.decision.reasons)
    assert "champion" not in client.get_registered_model(name).aliases
    relaxed = _settings(store, require_beat_buy_and_hold=False)
    assert promote_model(relaxed, "ppo").decision.promote
    assert client.get_registered_model(name).aliases == {"champion": 1}


def test_promote_model_challenger_signature_mismatching_champion_rejected_champion_untouched(store):
    from gpt_trader.registry.lifecycle import promote_model, registry_client
    from gpt_trader.registry.models import promote

    settings = _settings(store, require_beat_buy_and_hold=False, min_improvement=0.0)
    client = registry_client(settings)
    name = settings.registry.transformer_model
    promote(client, name, _register(client, name, 0.0, "2024-01-15T00:00:00+00:00"), reason="seed")
    # A crafted challenger: long (so it would beat the flat champion) but its signature wants `ret_1` as text.
    crafted = features().with_columns(pl.col("ret_1").cast(pl.Utf8))
    challenger = _register(client, name, 1.0, "2024-01-15T00:00:00+00:00", frame=crafted)
    report = promote_model(settings, "transformer")
    assert report.challenger.sanity.predicts
    assert "sharpe" in report.challenger.metrics  # it could be scored: only the signature is wrong
    assert not report.decision.promote
    assert report.decision.reasons == (
        "challenger input signature does not match champion v1's input signature: "
        "'ret_1' is double there but the model wants string",
    )
    assert client.get_registered_model(name).aliases == {"champion": 1, "challenger": 2}
    assert "'ret_1' is double there" in client.get_model_version(name, challenger).tags["promotion.reasons"]


def test_promote_model_first_model_needing_a_column_the_features_lack_rejected(store):
    from gpt_trader.registry.lifecycle import promote_model, registry_client

    settings = _settings(store, require_beat_buy_and_hold=False)
    client = registry_client(settings)
    name = settings.registry.rl_dqn_model
    _register(client, name, 1.0, "2024-01-15T00:00:00+00:00", frame=features().with_columns(sentiment=pl.lit(0.5)))
    report = promote_model(settings, "dqn")
    assert not report.decision.promote
    assert report.decision.reasons == (
        "challenger input signature does not match the feature columns: columns missing there: ['sentiment']",
    )
    assert "champion" not in client.get_registered_model(name).aliases
