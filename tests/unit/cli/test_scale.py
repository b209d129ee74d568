from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gpt_trader.cli import app

ROOT = Path(__file__).resolve().parents[3]


def test_scale_cli_replays_2008_and_pauses_training(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["scale", "--start", "2008-06-01", "--end", "2009-01-01"])
    assert result.exit_code == 0, result.output
    assert "EXTREME" in result.output or "VOLATILE" in result.output
    assert "paused" in result.output
