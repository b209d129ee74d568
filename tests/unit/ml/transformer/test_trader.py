from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.errors import DataError
from gpt_trader.ml.transformer.trader import TransformerTrader, resolve_precision
from tests.unit.ml.transformer.synthetic import synthetic_features, tiny_config


@pytest.fixture(scope="module")
def trained() -> TransformerTrader:
    trader = TransformerTrader(tiny_config(max_epochs=2), track=False)
    trader.train(synthetic_features(120, symbols=("AAA", "BBB")))
    return trader


def test_trader_tiny_model_learnable_series_overfits():
    frame = synthetic_features(240, seed=1)
    trader = TransformerTrader(
        tiny_config(max_epochs=25, learning_rate=1e-2, window_stride=2, early_stopping_patience=25), track=False
    )
    metrics = trader.train(frame, frame)
    assert metrics["train_ce"] < 0.25 < math.log(3)  # chance level of three classes is ln 3 ~ 1.10
    out = trader.predict(frame)
    truth = frame["label"].to_numpy()[-len(out["signal"]) :]
    assert np.mean(out["signal"] == truth) > 0.95


def test_trader_predict_returns_seed_keys_per_row_and_symbol(trained: TransformerTrader):
    live = synthetic_features(40, symbols=("AAA", "BBB"), seed=5)
    out = trained.predict(live, return_attention=True)
    n = (40 - 8 + 1) * 2
    assert out["predictions"].shape == (n,)
    assert set(out["predictions"]) <= {"Buy", "Hold", "Sell"}
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert out["expected_return"].shape == (n,)
    assert out["attention"].shape == (n, 1, 2, 8)  # rows, layers, heads, window
    np.testing.assert_allclose(out["attention"].sum(-1), 1.0, rtol=1e-5)
    assert out["frame"].columns == ["ts", "symbol", "prediction", "p_sell", "p_hold", "p_buy", "expected_return"]
    assert list(out["symbol"][:2]) == ["AAA", "BBB"]


def test_trader_predict_last_only_gives_one_row_per_symbol(trained: TransformerTrader):
    out = trained.predict(synthetic_features(20, symbols=("AAA", "BBB")), last_only=True)
    assert list(out["symbol"]) == ["AAA", "BBB"]


def test_trader_predict_too_few_rows_raises(trained: TransformerTrader):
    with pytest.raises(DataError, match="needs 8"):
        trained.predict(synthetic_features(5, symbols=("AAA", "BBB")))


def test_trader_predict_missing_symbol_raises(trained: TransformerTrader):
    with pytest.raises(DataError, match="BBB"):
        trained.predict(synthetic_features(30, symbols=("AAA",)))


def test_trader_predict_before_training_raises():
    with pytest.raises(RuntimeError, match="no model"):
        TransformerTrader(tiny_config(), track=False).predict(synthetic_features(20))


def test_trader_save_load_predictions_identical(trained: TransformerTrader, tmp_path):
    live = synthetic_features(30, symbols=("AAA", "BBB"), seed=9)
    trained.save(tmp_path / "model")
    loaded = TransformerTrader.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(live)["probabilities"], trained.predict(live)["probabilities"])
    assert loaded.symbols == ("AAA", "BBB")


def test_trader_load_not_a_model_dir_raises(tmp_path):
    with pytest.raises(DataError, match=r"trader\.json"):
        TransformerTrader.load(tmp_path)


def test_trader_train_too_few_rows_for_validation_raises():
    with pytest.raises(DataError, match="too few"):
        TransformerTrader(tiny_config(), track=False).train(synthetic_features(12))


def test_trader_train_missing_feature_column_raises():
    frame = synthetic_features(60).drop("volume_z")
    with pytest.raises(DataError, match="volume_z"):
        TransformerTrader(tiny_config(), track=False).train(frame)


def test_resolve_precision_auto_on_cpu_is_full_precision():
    assert resolve_precision("auto") in ("32-true", "bf16-mixed")
    assert resolve_precision("bf16-mixed") == "bf16-mixed"


def test_trader_bf16_precision_trains_on_cpu():
    trader = TransformerTrader(tiny_config(precision="bf16-mixed", max_epochs=1), track=False)
    trader.train(synthetic_features(80))
    out = trader.predict(synthetic_features(20))
    assert np.isfinite(out["probabilities"]).all()


@pytest.mark.slow
def test_trader_training_run_mlflow_contents(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from gpt_trader.registry.config import RegistryConfig
    from gpt_trader.registry.tracking import tracking_uri

    registry = RegistryConfig()
    trader = TransformerTrader(tiny_config(max_epochs=2), registry=registry, mlflow_dir=tmp_path / "mlflow")
    data = synthetic_features(120, symbols=("AAA", "BBB"))
    trader.train(data.filter(pl.col("ts") < data["ts"][90]), data.filter(pl.col("ts") >= data["ts"][80]))
    client = MlflowClient(tracking_uri(registry, tmp_path / "mlflow"))
    run = client.get_run(trader.run_id)
    assert run.data.params["transformer.d_model"] == "16"
    assert run.data.params["data.symbols"] == "AAA,BBB"
    assert len(run.data.tags["git_commit"]) >= 7
    assert len(run.data.tags["data_sha256"]) == 64
    assert "version.torch" in run.data.tags
    history = client.get_metric_history(trader.run_id, "val_loss")
    assert len(history) == 2  # one value per epoch
    assert "train_loss_epoch" in run.data.metrics
    assert "val_oos_AAA_direction_n_calls" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(trader.run_id, "plots")}
    artifacts |= {a.path for a in client.list_artifacts(trader.run_id, "evaluation")}
    assert {"plots/attention.png", "evaluation/val_report.md"} <= artifacts
    mlflow.set_tracking_uri(tracking_uri(registry, tmp_path / "mlflow"))
    model = mlflow.pyfunc.load_model(trader.model_uri)
    assert model.metadata.signature is not None
    # The logged input example: each symbol's last max_seq_length + 2 validation rows, in the signature's columns.
    example = model.input_example
    assert example is not None
    assert list(example.columns) == model.metadata.get_input_schema().input_names()
    rows = trader.config.max_seq_length + 2
    val = data.filter(pl.col("ts") >= data["ts"][80]).sort("symbol", "ts").group_by("symbol", maintain_order=True)
    expected = val.tail(rows)
    assert list(example["symbol"]) == expected["symbol"].to_list() == ["AAA"] * rows + ["BBB"] * rows
    np.testing.assert_array_equal(
        example["ts"].to_numpy(), expected["ts"].dt.replace_time_zone(None).to_numpy().astype("datetime64[ns]")
    )
    np.testing.assert_allclose(example["close"].to_numpy(), expected["close"].to_numpy(), rtol=0)
    assert len(model.predict(example)) == 2 * (rows - trader.config.max_seq_length + 1)
    live = synthetic_features(30, symbols=("AAA", "BBB"), seed=3)
    served = model.predict(live.with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas())
    direct = trader.predict(live)
    np.testing.assert_allclose(served["p_buy"].to_numpy(), direct["probabilities"][:, 2], rtol=1e-6)
    assert list(served["prediction"]) == list(direct["predictions"])
