from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gpt_trader.cli import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_cli_help_imports_no_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from gpt_trader.cli import app; "
        "r = CliRunner().invoke(app, ['data', '--help']); assert r.exit_code == 0, r.output; "
        "heavy = ('polars', 'torch', 'great_expectations', 'mlflow', 'pandas'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_config_error_exits_2_naming_key(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("scaling: {max_wrkers: 3}\n")
    result = runner.invoke(app, ["--config", str(bad), "config", "show"])
    assert result.exit_code == 2
    assert "scaling.max_wrkers: unknown key" in result.output


def test_cli_config_show_prints_layers(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("GPT_TRADER_CONFIG", raising=False)
    result = runner.invoke(app, ["-c", "config/production.yaml", "config", "show"])
    assert result.exit_code == 0, result.output
    assert "# layers: params.yaml, config/production.yaml" in result.output
    assert "d_model: 512" in result.output


def test_cli_features_before_validation_exits_4(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"paths: {{data: {tmp_path / 'data'}, metrics: {tmp_path / 'metrics'}}}\n")
    result = runner.invoke(app, ["-c", str(overlay), "data", "features"])
    assert result.exit_code == 4
    assert "has not been validated yet" in result.output
    assert not (tmp_path / "data" / "features").exists()
