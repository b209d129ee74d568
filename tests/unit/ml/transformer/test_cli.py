from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpt_trader.cli import app
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DatasetSpec
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.data.store import dataset_path, write_frame
from tests.unit.ml.transformer.synthetic import FEATURES

runner = CliRunner()
TINY = {
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "max_seq_length": 8,
    "max_epochs": 1,
    "num_threads": 1,
    "train_symbols": ["GOOGL"],
    "evaluation": {
        "groups": [["GOOGL"]],
        "folds": {"default": 1},
        "test_bars": {"default": 60},
        "val_bars": {"default": 40},
        "min_train_bars": 100,
    },
}


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "data": {"datasets": [{"source": "bundled", "symbol": "GOOGL", "timeframe": "1d"}]},
                "ml": {"transformer": TINY},
            }
        )
    )
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump({"paths": {k: str(tmp_path / k) for k in ("data", "models", "reports", "mlflow", "metrics")}})
    )
    return params, overlay


def test_cli_evaluate_transformer_without_features_exits_3_naming_command(tmp_path):
    params, overlay = write_config(tmp_path)
    result = runner.invoke(app, ["--params", str(params), "-c", str(overlay), "evaluate", "transformer"])
    assert result.exit_code == 3
    assert "gpt-trader data features" in result.output


@pytest.mark.slow
def test_cli_train_and_evaluate_transformer_print_table_and_write_outputs(tmp_path):
    params, overlay = write_config(tmp_path)
    spec = DatasetSpec(source="bundled", symbol="GOOGL", timeframe="1d")
    bars = BundledSource().fetch(
        "GOOGL", datetime(2014, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC), Timeframe.parse("1d")
    )
    write_frame(dataset_path(tmp_path / "data", "features", spec), build_features(bars, FEATURES))
    trained = runner.invoke(app, ["--params", str(params), "-c", str(overlay), "train", "transformer"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "models" / "transformer" / "model.pt").is_file()
    evaluated = runner.invoke(
        app, ["--params", str(params), "-c", str(overlay), "evaluate", "transformer", "--no-track"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "buy&hold" in evaluated.output
    assert "logistic" in evaluated.output
    assert (tmp_path / "metrics" / "transformer.json").is_file()
    assert (tmp_path / "reports" / "transformer" / "report.md").is_file()
    shown = runner.invoke(app, ["--params", str(params), "-c", str(overlay), "evaluate", "transformer", "--show"])
    assert shown.exit_code == 0, shown.output
    assert "walk-forward" in shown.output


def test_cli_evaluate_transformer_show_without_report_exits_3(tmp_path):
    params, overlay = write_config(tmp_path)
    result = runner.invoke(app, ["--params", str(params), "-c", str(overlay), "evaluate", "transformer", "--show"])
    assert result.exit_code == 3
    assert "no evaluation report" in result.output
