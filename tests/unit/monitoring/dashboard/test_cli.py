"""`gpt-trader dashboard`: bind rules and a short demo run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpt_trader.cli.dashboard  # noqa: F401  (registers the command until gpt_trader.cli imports it)
from gpt_trader.cli.app import app

ROOT = Path(__file__).resolve().parents[4]
runner = CliRunner()


def test_cli_dashboard_non_loopback_without_token_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPT_TRADER_DASHBOARD_TOKEN", raising=False)
    result = runner.invoke(app, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without a token" in result.output


@pytest.mark.slow
def test_cli_dashboard_demo_seconds_serves_then_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("GPT_TRADER_CONFIG", raising=False)
    result = runner.invoke(app, ["dashboard", "--port", "0", "--demo-seconds", "1", "--speed", "50"])
    assert result.exit_code == 0, result.output
    assert "dashboard: http://127.0.0.1:" in result.output
    assert "replayed" in result.output
