"""`gpt-trader train rl --agent ppo` end to end in a temp workspace: exit 0, DVC metrics and report written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from typer.testing import CliRunner

from gpt_trader.cli import app
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DatasetSpec, FeaturesConfig
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.data.store import dataset_path, write_frame
from gpt_trader.ml.rl.evaluate import FIGURES

TINY_RL = {
    "algorithm": "ppo",
    "total_timesteps": 128,
    "symbol": "SPX",
    "timeframe": "1d",
    "env": {"window_size": 4},
    "ppo": {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1, "net_arch": [8]},
    "evaluation": {"seeds": [0, 1], "random_agent_runs": 1, "peer": True},
}


def workspace(tmp_path: Path, mlflow_dir: Path) -> tuple[Path, Path]:
    """params.yaml (the tiny RL section) and an overlay sending every output root into tmp_path."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"ml": {"reinforcement": TINY_RL}}))
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "paths": {
                    **{k: str(tmp_path / k) for k in ("data", "models", "reports", "metrics")},
                    "mlflow": str(mlflow_dir),
                }
            }
        )
    )
    spec = DatasetSpec(source="bundled", symbol="SPX", timeframe="1d")
    bars = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).tail(300)
    write_frame(dataset_path(tmp_path / "data", "features", spec), build_features(bars, FeaturesConfig()))
    return params, overlay


def test_cli_train_rl_ppo_writes_metrics_json_and_report(tmp_path: Path, mlflow_dir: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository
    monkeypatch.delenv("GPT_TRADER_CONFIG", raising=False)
    params, overlay = workspace(tmp_path, mlflow_dir)
    result = CliRunner().invoke(
        app, ["--params", str(params), "-c", str(overlay), "train", "rl", "--agent", "ppo", "--no-peer"]
    )
    assert result.exit_code == 0, result.output
    assert "PPO held-out" in result.output

    metrics = json.loads((tmp_path / "metrics" / "rl.json").read_text())
    assert set(metrics) == {"ppo"}  # --no-peer overrides evaluation.peer; dqn was not asked for
    ppo = metrics["ppo"]
    assert ppo["timesteps"] == 128
    for figure in FIGURES:
        for key in (figure, f"{figure}_std"):
            assert isinstance(ppo[key], float), key
            assert math.isfinite(ppo[key]), key
    assert ppo["n_trades_std"] >= 0.0
    assert set(ppo["baselines"]) == {"buy_and_hold", "random", "flat"}
    for name, figures in ppo["baselines"].items():
        assert set(figures) == set(FIGURES), name
    assert ppo["baselines"]["flat"]["total_return"] == 0.0
    assert ppo["baselines"]["buy_and_hold"]["n_trades"] == 1.0

    report = (tmp_path / "reports" / "rl" / "report.md").read_text()
    assert report.startswith("# Deep RL agents: held-out evaluation after costs")
    assert "## PPO (128 timesteps; held-out" in report
    assert "seeds [0, 1]" in report
    lines = report.splitlines()
    row = next(line for line in lines if line.startswith("| ppo |"))
    # A well-formed markdown table: header, one separator with a cell per column, then the rows.
    head = next(i for i, line in enumerate(lines) if line.startswith("| agent |"))
    assert lines[head + 1] == "|---" * (lines[head].count("|") - 1) + "|"
    assert lines[head + 2].startswith("| ppo |")
    assert f"{ppo['sharpe_ratio']:.3f} ± {ppo['sharpe_ratio_std']:.3f}" in row
    assert any(line.startswith("| buy_and_hold |") for line in report.splitlines())
    # Both seeds' agents were saved, and the stage's outputs are exactly where the overlay sent them.
    assert sorted(p.parent.name for p in (tmp_path / "models" / "rl" / "ppo").glob("seed_*/agent.zip")) == [
        "seed_0",
        "seed_1",
    ]
    assert not (tmp_path / "mlruns").exists()
