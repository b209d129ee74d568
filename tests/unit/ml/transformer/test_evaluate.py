from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from gpt_trader.core.errors import DataError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DataConfig, DatasetSpec
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.data.store import dataset_path, write_frame
from gpt_trader.ml.config import MLConfig
from gpt_trader.ml.transformer.evaluate import evaluate_group, render_report, table_rows
from gpt_trader.trading.config import CostConfig
from tests.unit.ml.transformer.synthetic import FEATURES, synthetic_features, tiny_config

EVAL = {
    "groups": [["SPX"]],
    "folds": {"default": 2},
    "test_bars": {"default": 40},
    "val_bars": {"default": 30},
    "min_train_bars": 100,
    "embargo_bars": 2,
}


def test_evaluate_group_learnable_series_beats_chance_with_all_figures():
    frame = synthetic_features(400, symbols=("AAA", "BBB"), seed=4)
    config = tiny_config(max_epochs=8, learning_rate=1e-2, evaluation=EVAL)
    results = evaluate_group(frame, "1h", config, FEATURES, CostConfig())
    assert [r.symbol for r in results] == ["AAA", "BBB"]
    for r in results:
        assert r.n_folds == 2
        assert r.model["direction_n_calls"] > 40
        # The label is a function of the current features: far above chance out of sample (50%).
        assert r.model["direction_accuracy"] > 0.65
        assert r.baseline["direction_accuracy"] > 0.8
        assert {"ic", "dm_stat", "dm_p_value", "strategy_sharpe", "direction_ci95_low"} <= set(r.model)
        assert len(r.ts) == len(r.equity["transformer"]) == len(r.equity["buy and hold"])
    report = render_report(results, config=config, costs=CostConfig(), wall_secs=1.0)
    assert "| AAA 1h | transformer |" in report
    assert len(table_rows(results)) == 6


def test_evaluate_group_test_windows_never_overlap_training(monkeypatch):
    from gpt_trader.ml.transformer import trader as trader_module

    seen: list[tuple[int, int, int]] = []
    original = trader_module.TransformerTrader.fit_panels

    def spy(self, train, val, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((train.ts[-1], val.ts[kwargs["val_label_start"]], val.ts[-1]))
        return original(self, train, val, **kwargs)

    monkeypatch.setattr(trader_module.TransformerTrader, "fit_panels", spy)
    frame = synthetic_features(300, seed=2)
    results = evaluate_group(frame, "1h", tiny_config(max_epochs=1, evaluation=EVAL), FEATURES, CostConfig())
    test_start = results[0].ts[0]
    train_end, val_start, val_end = seen[0]
    assert train_end < val_start <= val_end < test_start


def test_evaluate_group_too_short_series_raises():
    with pytest.raises(DataError, match="cannot hold"):
        evaluate_group(synthetic_features(100), "1h", tiny_config(evaluation=EVAL), FEATURES, CostConfig())


@pytest.mark.slow
def test_evaluate_stage_writes_metrics_report_plot_and_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from gpt_trader.ml.transformer.stages import evaluate_stage, train_stage
    from gpt_trader.registry.tracking import tracking_uri
    from gpt_trader.settings import PathsConfig, Settings

    spec = DatasetSpec(source="bundled", symbol="SPX", timeframe="1d")
    bars = BundledSource().fetch(
        "SPX", datetime(2013, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC), Timeframe.parse("1d")
    )
    write_frame(dataset_path(tmp_path / "data", "features", spec), build_features(bars, FEATURES))
    paths = {k: str(tmp_path / k) for k in ("data", "models", "reports", "mlflow", "metrics")}
    settings = Settings(
        paths=PathsConfig(**paths),
        data=DataConfig(datasets=[spec]),
        ml=MLConfig(transformer=tiny_config(max_epochs=1, train_symbols=["SPX"], evaluation=EVAL)),
    )
    out = evaluate_stage(settings, log=lambda _: None)
    metrics = json.loads((tmp_path / "metrics" / "transformer.json").read_text())
    assert metrics["SPX_1d"]["model_direction_n_calls"] > 0
    assert "buy_and_hold_sharpe" in metrics["SPX_1d"]
    assert "baseline_strategy_sharpe" in metrics["SPX_1d"]
    report = (tmp_path / "reports" / "transformer" / "report.md").read_text()
    assert "| SPX 1d | buy&hold |" in report
    assert (tmp_path / "reports" / "transformer" / "equity.png").stat().st_size > 1000
    client = MlflowClient(tracking_uri(settings.registry, tmp_path / "mlflow"))
    run = client.get_run(out.run_id)
    assert "SPX_1d.model_direction_accuracy" in run.data.metrics
    assert run.data.tags["git_commit"]
    assert len(run.data.tags["data_sha256"]) == 64
    assert {a.path for a in client.list_artifacts(out.run_id, "evaluation")} >= {
        "evaluation/report.md",
        "evaluation/equity.png",
    }
    trader = train_stage(settings, log=lambda _: None)
    assert (tmp_path / "models" / "transformer" / "trader.json").is_file()
    saved = json.loads((tmp_path / "metrics" / "transformer_train.json").read_text())
    assert saved["run_id"] == trader.run_id
    assert np.isfinite(saved["best_val_loss"])


def test_feature_files_missing_features_raise_naming_the_command(tmp_path):
    from gpt_trader.ml.transformer.stages import feature_files
    from gpt_trader.settings import PathsConfig, Settings

    settings = Settings(paths=PathsConfig(data=str(tmp_path)))
    with pytest.raises(DataError, match="gpt-trader data features"):
        feature_files(settings, ["SPX"])
    with pytest.raises(DataError, match="mix timeframes"):
        feature_files(settings, ["SPX", "EURUSD"])
    with pytest.raises(DataError, match="not configured"):
        feature_files(settings, ["XYZ"])
